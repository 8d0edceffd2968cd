"""The LoRA internals, as PEFT keeps ``tuners/lora/``: the settings (``spec``), the LoRA-wrapped modules of a model
(``sites``), their A/B factors and delta (``factors``), merging them into the weights (``merge``) and the cheap
LoRA dropout (``dropout``). Only this package names PEFT's LoRA attributes; it imports nothing above ``models``."""
from lorank.lora.spec import LoraSpec, apply_lora, parse_alpha, parse_layers

__all__ = ["LoraSpec", "apply_lora", "parse_alpha", "parse_layers"]
