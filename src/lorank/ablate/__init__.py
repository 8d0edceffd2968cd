"""Inference-time ablations of trained LoRA adapters (masks, sweeps)."""
from lorank.ablate.masks import Ablation, LoraSite, Mask, ablated, lora_sites

__all__ = ["Ablation", "LoraSite", "Mask", "ablated", "lora_sites"]
