"""Shared pieces of the analyses: an adapter's files read (its LoRA factors by :mod:`lorank.lora.factors`), the
frozen base weights, spectrum statistics, picking judged pairs from an evaluation set, and writing CSV tables
atomically (figures go through :mod:`lorank.plotting`)."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from lorank.adapters import PEFT_TYPES, read_adapter_state, read_checkpoint_meta
from lorank.atomic import atomic_open
from lorank.errors import ConfigError, DataError
from lorank.layout.adapter import PEFT_CONFIG, export_meta_file, peft_config_file
from lorank.layout.checkpoints import latest_checkpoint, marker_file
from lorank.lora.factors import LoraModule, read_factors
from lorank.lora.spec import VARIANTS
from lorank.models.source import materialize, resolve_model

#: ``progress(label, total) -> tick(n)``: the CLI passes a rich progress bar factory
ProgressFactory = Callable[[str, int], Callable[[int], None]]


# --------------------------------------------------------------------------------------------- adapters
@dataclass
class AdapterFiles:
    path: Path
    config: dict[str, Any]
    modules: dict[tuple[int, str], LoraModule]
    family: str
    projections: tuple[str, ...]
    num_layers: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        """The LoRA variant: lorank's metadata (``lora.variant``: DyLoRA saves as a plain LoRA), else the PEFT
        config's (``ADALORA``, ``use_dora``, ``use_rslora``)."""
        recorded = (self.meta.get("lora") or {}).get("variant") if isinstance(self.meta, dict) else None
        if recorded in VARIANTS:
            return recorded
        if self.config.get("peft_type") == "ADALORA":
            return "adalora"
        if self.config.get("use_dora"):
            return "dora"
        return "rslora" if self.config.get("use_rslora") else "lora"

    def layers(self) -> list[int]:
        return sorted({k[0] for k in self.modules})


def resolve_adapter_dir(adapter: str | Path) -> Path:
    """A run dir -> its last complete checkpoint; a checkpoint dir -> itself (clear errors otherwise)."""
    p = Path(adapter)
    if not p.exists():
        raise ConfigError(f"adapter not found: {p}")
    return latest_checkpoint(p)


def _read_meta(ckpt: Path, fallback: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    # lorank's checkpoint marker or an exported adapter's metadata read directly; anything else goes through
    # read_checkpoint_meta
    for f in (marker_file(ckpt), export_meta_file(ckpt)):
        if f.is_file():
            return json.loads(f.read_text(encoding="utf-8"))
    try:
        return fallback(ckpt)
    except ConfigError:
        return {}


def read_adapter(adapter: str | Path, allow_pickle: bool = False) -> AdapterFiles:
    """The LoRA factors of every module of an adapter (safetensors unless pickle is allowed), no model."""
    ckpt = resolve_adapter_dir(adapter)
    cfg_file = peft_config_file(ckpt)
    if not cfg_file.is_file():
        raise ConfigError(f"{ckpt}: no {PEFT_CONFIG}")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    if cfg.get("peft_type", "LORA") not in PEFT_TYPES:
        raise ConfigError(f"{ckpt}: peft_type {cfg.get('peft_type')!r} is not LoRA or AdaLoRA")
    modules, spec = read_factors(read_adapter_state(ckpt, allow_pickle), cfg, ckpt)
    meta = _read_meta(ckpt, read_checkpoint_meta)
    n_layers = max(k[0] for k in modules) + 1
    return AdapterFiles(ckpt, cfg, modules, spec.family, spec.projections, n_layers, meta)


def base_hub_id(adapter: AdapterFiles) -> str | None:
    """The Hub model an adapter was trained on, where it can tell: its exported metadata's hub id, else the hub id of
    the base it names (a lorank name such as ``smollm2-135m``, or a hub id); None for a local folder or file."""
    from lorank.models.source import hub_id_for

    meta = adapter.meta if isinstance(adapter.meta, dict) else {}
    if meta.get("base_model_hub_id"):
        return str(meta["base_model_hub_id"])
    base = meta.get("base_model") or adapter.config.get("base_model_name_or_path")
    if not base or Path(str(base)).is_absolute() or Path(str(base)).exists():
        return None
    return hub_id_for(str(base))


# ------------------------------------------------------------------------------------------- base weights
def base_model_path(adapter: AdapterFiles, base: str | Path | None = None) -> str:
    """Where the frozen base weights are: ``base`` if given, else the checkpoint's metadata."""
    cand = base or adapter.meta.get("model_path") or adapter.meta.get("base_model") \
        or adapter.config.get("base_model_name_or_path")
    if cand and not base and not Path(str(cand)).exists():
        cand = adapter.meta.get("base_model") or adapter.config.get("base_model_name_or_path")
    if not cand:
        raise ConfigError(f"{adapter.path}: cannot tell the base model; pass base=... (--base)")
    return materialize(resolve_model(str(cand)))


class BaseWeights:
    """Lazy access to the frozen base weights: only the tensors asked for are read (safetensors)."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open

        self.path = Path(path)
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise ConfigError(f"{self.path}: no *.safetensors base weights (the relative norm needs them)")
        self._index: dict[str, Path] = {}
        for f in files:
            with safe_open(str(f), "pt") as fh:
                for k in fh.keys():
                    self._index[k] = f

    def weight(self, module_name: str) -> torch.Tensor:
        """The ``.weight`` of a module, matched exactly or by its ``layers.N.block.proj`` suffix."""
        from safetensors import safe_open

        key = module_name + ".weight"
        f = self._index.get(key)
        if f is None:
            m = re.search(r"layers\.\d+\..*$", module_name)
            tail = "." + (m.group(0) if m else module_name) + ".weight"
            hits = [k for k in self._index if k.endswith(tail) or k == tail[1:]]
            if len(hits) != 1:
                raise ConfigError(f"{self.path}: base weight for {module_name} not found "
                                  f"({'ambiguous: ' + ', '.join(hits[:3]) if hits else 'no matching key'})")
            key, f = hits[0], self._index[hits[0]]
        with safe_open(str(f), "pt") as fh:
            return fh.get_tensor(key).float()


# ---------------------------------------------------------------------------------------------- spectra
def effective_rank(s: Sequence[float] | torch.Tensor) -> float:
    """Roy & Vetterli (2007): exp of the Shannon entropy of the L1-normalised singular values."""
    s = torch.as_tensor(s, dtype=torch.float64).clamp_min(0)
    tot = float(s.sum())
    if tot <= 0:
        return 0.0
    p = s[s > 0] / tot
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(s: Sequence[float] | torch.Tensor) -> float:
    """||M||_F^2 / ||M||_2^2."""
    s = torch.as_tensor(s, dtype=torch.float64)
    top = float(s.max()) if s.numel() else 0.0
    return float((s ** 2).sum() / top ** 2) if top > 0 else 0.0


# -------------------------------------------------------------------------------------------- eval data
@dataclass
class PairSet:
    qids: list[str]                       # selected queries, sorted
    keys: list[tuple[str, str]]           # (qid, docid) per pair, grouped by query
    grades: list[int | None]              # judged grade, None if unjudged
    seqs: list[list[int]] = field(default_factory=list)


def select_queries(rs: Any, depth: int, max_queries: int | None, seed: int = 0,
                   rel_threshold: int = 2, need_both: bool = True) -> list[str]:
    """Judged queries with candidates; with ``need_both``, only those whose judged top-``depth`` has
    a relevant and a non-relevant pair. A seeded sample of ``max_queries`` of them, sorted."""
    out = []
    for qid in sorted(rs.run):
        judged = rs.qrels.get(qid)
        if not judged:
            continue
        grades = [judged[e.docid] for e in rs.run[qid][:depth] if e.docid in judged]
        if need_both and not (any(g >= rel_threshold for g in grades) and any(g < rel_threshold for g in grades)):
            continue
        if grades or not need_both:
            out.append(qid)
    if not out:
        raise DataError(rs.name, None, f"no judged query has both relevant (grade >= {rel_threshold}) and "
                                       f"non-relevant judged candidates in its top {depth}")
    if max_queries is not None and 0 < max_queries < len(out):
        out = sorted(random.Random(seed).sample(out, max_queries))
    return out


def select_pairs(rs: Any, qids: Sequence[str], depth: int, judged_only: bool) -> PairSet:
    keys, grades = [], []
    for qid in qids:
        judged = rs.qrels.get(qid, {})
        for e in rs.run[qid][:depth]:
            g = judged.get(e.docid)
            if judged_only and g is None:
                continue
            keys.append((qid, e.docid))
            grades.append(g)
    return PairSet(list(qids), keys, grades)


def encode_pairs(encoder: Any, rs: Any, pairs: PairSet) -> PairSet:
    pairs.seqs = [encoder.encode(rs.queries[q], rs.passages[d].text, rs.passages[d].title) for q, d in pairs.keys]
    return pairs


def write_csv(path: str | Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> Path:
    import csv

    with atomic_open(path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in columns})
    return Path(path)
