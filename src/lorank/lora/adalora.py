"""AdaLoRA (Zhang et al., ICLR 2023, arXiv:2303.10512) through PEFT's ``AdaLoraModel``: the orthogonality penalty
that the training loss gets, the budget step after each optimizer step, and the final rank allocation read back per
(layer, projection).

PEFT adds the penalty inside ``AdaLoraModel.forward`` only when the model returns its own ``loss``; lorank's
trainer computes a grouped ranking loss from the scores, so :func:`orth_penalty` is the same sum, added by the
trainer. The allocation is read from PEFT's ``rank_pattern`` (module name -> a boolean mask per singular value,
kept in the adapter's config once the budget has been allocated), else from the live ``lora_E`` values (a
pruned singular value is zero).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from lorank.atomic import atomic_write_bytes
from lorank.errors import ConfigError
from lorank.lora.factors import infer_arch
from lorank.models.arch import arch_for


def is_adalora(model: Any) -> bool:
    """Whether ``model`` is a PEFT model with an AdaLoRA adapter (its SVD layers keep ``lora_E``)."""
    return any(hasattr(m, "lora_E") for m in model.modules())


def _adalora_model(model: Any) -> Any:
    base = getattr(model, "base_model", model)
    if not hasattr(base, "update_and_allocate"):
        raise ValueError("not an AdaLoRA PEFT model (no update_and_allocate)")
    return base


def orth_penalty(model: Any) -> torch.Tensor:
    """``orth_reg_weight`` x the mean over AdaLoRA's P (``lora_A``) and Q (``lora_B``) of ||P P^T - I||_F and
    ||Q^T Q - I||_F: PEFT's ``AdaLoraModel.forward`` penalty, computed the same way."""
    base = _adalora_model(model)
    name = base.trainable_adapter_name
    weight = float(base.peft_config[name].orth_reg_weight)
    total, n = None, 0
    for pname, p in base.model.named_parameters():
        if ("lora_A" in pname or "lora_B" in pname) and name in pname:
            if p.shape == torch.Size([0]):
                continue
            cov = p @ p.T if "lora_A" in pname else p.T @ p
            eye = torch.eye(*cov.size(), device=cov.device, dtype=cov.dtype)
            term = torch.norm(cov - eye, p="fro")
            total = term if total is None else total + term
            n += 1
    if total is None:
        return torch.zeros(())
    return weight * total / n


def update_budget(model: Any, global_step: int) -> None:
    """PEFT's ``update_and_allocate`` at ``global_step`` (0-based, the optimizer steps done before this one): call it
    after the optimizer step and before the gradients are zeroed."""
    _adalora_model(model).update_and_allocate(global_step)


#: a training checkpoint's full AdaLoRA state, for resuming: PEFT saves the adapter resized to the kept ranks, which
#: neither loads back into the full-size training modules nor keeps the pruned triplets' P, Q or the importance scores
TRAINING_STATE = "adalora_state.safetensors"
_IPT = ("ipt", "exp_avg_ipt", "exp_avg_unc")


def save_training_state(model: Any, ckpt: str | Path) -> None:
    """Write ``ckpt/adalora_state.safetensors``: every trainable parameter at its full (training) size, the rank
    allocator's importance averages and the live ``rank_pattern``, all that :func:`load_training_state` needs for a
    resumed run to go on as the uninterrupted one."""
    from safetensors.torch import save

    base = _adalora_model(model)
    alloc = base.rankallocator
    tensors = {f"param/{n}": p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    for kind in _IPT:
        tensors.update({f"{kind}/{n}": t.detach().contiguous().cpu() for n, t in getattr(alloc, kind).items()})
    pattern = base.peft_config[base.trainable_adapter_name].rank_pattern
    atomic_write_bytes(Path(ckpt) / TRAINING_STATE, save(tensors, metadata={"rank_pattern": json.dumps(pattern)}))


def load_training_state(model: Any, ckpt: str | Path) -> None:
    """Put back what :func:`save_training_state` wrote into ``ckpt``: the parameters (in place), the importance
    averages and the live ``rank_pattern``. A checkpoint without the file cannot be resumed (ConfigError)."""
    from safetensors import safe_open

    path = Path(ckpt) / TRAINING_STATE
    if not path.is_file():
        raise ConfigError(f"{ckpt}: no {TRAINING_STATE}; an AdaLoRA checkpoint saved without it cannot be resumed "
                          "(PEFT saved its adapter resized to the kept ranks); train from scratch with --no-resume")
    base = _adalora_model(model)
    params = dict(model.named_parameters())
    device = next(iter(params.values())).device
    alloc = base.rankallocator
    for kind in _IPT:
        setattr(alloc, kind, {})
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            kind, name = key.split("/", 1)
            t = f.get_tensor(key)
            if kind == "param":
                with torch.no_grad():
                    params[name].copy_(t)
            else:
                getattr(alloc, kind)[name] = t.to(device)  # named inside AdaLoraModel
        pattern = json.loads(f.metadata()["rank_pattern"])
    base.peft_config[base.trainable_adapter_name].rank_pattern = pattern


def rank_allocation(model: Any) -> dict[tuple[int, str], dict[str, int]]:
    """``{(layer, projection): {"rank": kept, "init_r": started with}}`` of a live AdaLoRA model: from PEFT's
    ``rank_pattern`` (the allocation it keeps in the adapter's config) when set, else from the nonzero ``lora_E``
    values."""
    base = _adalora_model(model)
    name = base.trainable_adapter_name
    pattern = base.peft_config[name].rank_pattern or {}
    arch = arch_for(model.config)
    out: dict[tuple[int, str], dict[str, int]] = {}
    for mname, mod in model.named_modules():
        if not hasattr(mod, "lora_E") or name not in mod.lora_E:
            continue
        parsed = arch.parse(mname)
        if parsed is None:
            continue
        e = mod.lora_E[name].detach().reshape(-1)
        key = _pattern_key(pattern, mname, name)
        kept = int(sum(bool(x) for x in pattern[key])) if key else int((e != 0).sum())
        out[parsed] = {"rank": kept, "init_r": int(e.numel())}
    return out


def allocation_from_adapter(config: dict[str, Any], state: dict[str, torch.Tensor],
                            where: Any) -> tuple[dict[tuple[int, str], dict[str, int]], str]:
    """``({(layer, projection): {"rank": kept, "init_r": started with}}, family)`` of a saved AdaLoRA adapter (its
    ``adapter_config.json`` and weights): from the ``rank_pattern`` PEFT saved when set, else from the nonzero
    ``lora_E`` values. ``where`` names the adapter in errors."""
    if config.get("peft_type") != "ADALORA":
        raise ConfigError(f"{where}: not an AdaLoRA adapter (peft_type {config.get('peft_type')!r})")
    e_values = {_stem(k): t.reshape(-1) for k, t in state.items() if ".lora_E" in k}
    if not e_values:
        raise ConfigError(f"{where}: the adapter holds no AdaLoRA singular values (lora_E)")
    pattern = {_stem(k): v for k, v in (config.get("rank_pattern") or {}).items()}
    spec = infer_arch({name.rsplit(".", 1)[-1] for name in e_values})
    out: dict[tuple[int, str], dict[str, int]] = {}
    for name, e in e_values.items():
        parsed = spec.parse("." + name)
        if parsed is None:
            continue
        if name in pattern:  # PEFT saves the factors resized to the kept rank: the mask has the initial one
            kept, init = int(sum(bool(x) for x in pattern[name])), len(pattern[name])
        else:
            kept, init = int((e != 0).sum()), int(e.numel())
        out[parsed] = {"rank": kept, "init_r": init}
    if not out:
        raise ConfigError(f"{where}: no AdaLoRA module maps onto a {spec.family} layer/projection")
    return out, spec.family


def load_into_training_model(model: Any, state: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Load a saved AdaLoRA adapter (``state``, its ``adapter_config.json`` as ``config``) into a live AdaLoRA model
    at its full training size, which stays as it is: each module's kept triplets go back to the indices its saved
    ``rank_pattern`` kept, the pruned ones get a zero singular value, so the model computes the saved adapter's delta.
    (PEFT's own loader resizes the live modules to the pattern first, after which the training model's full-size
    weights no longer fit them.)"""
    from peft import set_peft_model_state_dict

    pattern = {_stem(k): v for k, v in (config.get("rank_pattern") or {}).items()}
    full = dict(state)
    for key, t in state.items():
        m = re.search(r"\.(lora_[ABE])(\.[^.]+)?$", key)
        mask = pattern.get(_factor_stem(key)) if m else None
        if mask is None:
            continue
        idx = torch.tensor([i for i, kept in enumerate(mask) if kept], dtype=torch.long)
        if m.group(1) == "lora_B":
            out = t.new_zeros(t.shape[0], len(mask))
            out[:, idx] = t
        else:
            out = t.new_zeros((len(mask),) + tuple(t.shape[1:]))
            out[idx] = t
        full[key] = out
    base = _adalora_model(model)
    live = base.peft_config[base.trainable_adapter_name]
    kept, live.rank_pattern = live.rank_pattern, None  # else PEFT resizes the live modules to it before loading
    try:
        set_peft_model_state_dict(model, full)
    finally:
        live.rank_pattern = kept


def _factor_stem(key: str) -> str:
    """A module's name from a saved AdaLoRA factor key (``base_model.model.<module>.lora_A|B|E[.<adapter>]``)."""
    return re.sub(r"\.lora_[ABE](\.[^.]+)?$", "", key.split("base_model.model.", 1)[-1])


def _stem(key: str) -> str:
    """A module's name from a saved key (``base_model.model.<module>.lora_E[.<adapter>]``)."""
    key = key.split("base_model.model.", 1)[-1]
    return re.sub(r"\.lora_E(\.[^.]+)?$", "", key)


def _pattern_key(pattern: dict[str, Any], module: str, adapter: str) -> str | None:
    """The ``rank_pattern`` key of a module: PEFT names it ``<module>.lora_E[.<adapter>]``, the module named inside
    the PEFT wrapper (no ``base_model.model.`` prefix)."""
    for key in pattern:
        stem = re.sub(rf"\.lora_E(\.{re.escape(adapter)})?$", "", key)
        if module == stem or module.endswith("." + stem):
            return key
    return None
