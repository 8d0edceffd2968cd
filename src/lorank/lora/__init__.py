"""LoRA specs resolved through the architecture map."""
from lorank.lora.spec import LoraSpec, apply_lora, parse_alpha, parse_layers

__all__ = ["LoraSpec", "apply_lora", "parse_alpha", "parse_layers"]
