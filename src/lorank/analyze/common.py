"""Shared pieces of the analyses: reading LoRA factors from adapter files, the frozen base weights,
picking judged pairs from an evaluation set, and writing figures atomically."""
from __future__ import annotations

import io
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from lorank.data.sources import load_eval_data  # noqa: F401  (re-exported; it lives with the readers)
from lorank.errors import ConfigError, DataError
from lorank.layout.adapter import PEFT_CONFIG, export_meta_file, peft_config_file
from lorank.layout.checkpoints import latest_checkpoint, marker_file

#: ``progress(label, total) -> tick(n)``: the CLI passes a rich progress bar factory
ProgressFactory = Callable[[str, int], Callable[[int], None]]

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(?:\.[^.]+)?\.weight$")
_MAG_KEY = re.compile(r"^(?P<module>.+)\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$")
_PEFT_PREFIX = "base_model.model."


# --------------------------------------------------------------------------------------------- adapters
@dataclass
class LoraModule:
    """One LoRA-wrapped projection read from an adapter file: ``delta = scaling * B @ A``."""

    name: str           # module name without PEFT's ``base_model.model.`` prefix
    layer: int
    projection: str
    component: str
    A: torch.Tensor     # (r, in)
    B: torch.Tensor     # (out, r)
    scaling: float
    fan_in_fan_out: bool = False
    magnitude: torch.Tensor | None = None  # DoRA

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def key(self) -> str:
        return f"L{self.layer}.{self.projection}"


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


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``rank_pattern``/``alpha_pattern`` lookup: a key matches the end of the module name."""
    for key, val in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return val
    return default


def _infer_arch(leaves: set[str]) -> Any:
    from lorank.models.arch import arch_for, known_model_types

    best, best_n = None, 0
    for spec in {arch_for(mt).family: arch_for(mt) for mt in known_model_types()}.values():
        n = len(leaves & set(spec.projections))
        if n > best_n:
            best, best_n = spec, n
    if best is None:
        raise ConfigError(f"cannot tell the model family of these LoRA modules ({sorted(leaves)}): "
                          "none is a projection in lorank's architecture map")
    return best


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
    from lorank.adapters import read_adapter_state, read_checkpoint_meta

    ckpt = resolve_adapter_dir(adapter)
    cfg_file = peft_config_file(ckpt)
    if not cfg_file.is_file():
        raise ConfigError(f"{ckpt}: no {PEFT_CONFIG}")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"{ckpt}: peft_type {cfg.get('peft_type')!r} is not LoRA")
    state = read_adapter_state(ckpt, allow_pickle)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for k, t in state.items():
        m = _LORA_KEY.match(k)
        if m:
            parts.setdefault(m.group("module"), {})[m.group("which")] = t
            continue
        m = _MAG_KEY.match(k)
        if m:
            parts.setdefault(m.group("module"), {})["m"] = t
    if not parts:
        raise ConfigError(f"{ckpt}: the adapter holds no LoRA weights (lora_A / lora_B)")
    leaves = {n.rsplit(".", 1)[-1] for n in parts}
    spec = _infer_arch(leaves)
    r_default, alpha_default = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))
    rslora = bool(cfg.get("use_rslora"))
    modules: dict[tuple[int, str], LoraModule] = {}
    for full, p in parts.items():
        if "A" not in p or "B" not in p:
            raise ConfigError(f"{ckpt}: module {full} has only lora_{'A' if 'A' in p else 'B'}")
        name = full[len(_PEFT_PREFIX):] if full.startswith(_PEFT_PREFIX) else full
        parsed = spec.parse("." + name)
        if parsed is None:
            continue
        layer, proj = parsed
        r = int(p["A"].shape[0])
        alpha = float(_pattern_value(cfg.get("alpha_pattern", {}), name, alpha_default))
        r_cfg = int(_pattern_value(cfg.get("rank_pattern", {}), name, r_default))
        if r_cfg != r:
            raise ConfigError(f"{ckpt}: {name} has rank {r} in the weights but {r_cfg} in {PEFT_CONFIG}")
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        modules[(layer, proj)] = LoraModule(name, layer, proj, spec.component_of(proj), p["A"].float(),
                                            p["B"].float(), scaling, bool(cfg.get("fan_in_fan_out", False)),
                                            p.get("m"))
    if not modules:
        raise ConfigError(f"{ckpt}: no LoRA module maps onto a {spec.family} layer/projection")
    meta = _read_meta(ckpt, read_checkpoint_meta)
    n_layers = max(k[0] for k in modules) + 1
    return AdapterFiles(ckpt, cfg, modules, spec.family, spec.projections, n_layers, meta)


# ------------------------------------------------------------------------------------------- base weights
def base_model_path(adapter: AdapterFiles, base: str | Path | None = None) -> str:
    """Where the frozen base weights are: ``base`` if given, else the checkpoint's metadata."""
    from lorank.models.source import materialize, resolve_model

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
@dataclass
class LowRankSVD:
    """Thin SVD of ``scaling * B @ A`` from QR factors (never forms the full matrix)."""

    U: torch.Tensor   # (out, r) left singular vectors
    S: torch.Tensor   # (r,) singular values, descending, scaling included
    V: torch.Tensor   # (in, r) right singular vectors


def low_rank_svd(mod: LoraModule) -> LowRankSVD:
    """delta = s B A with B = Qb Rb, A^T = Qa Ra  =>  delta = Qb (s Rb Ra^T) Qa^T; SVD of the r x r core."""
    B, A = mod.B.double(), mod.A.double()
    Qb, Rb = torch.linalg.qr(B)            # (out, r), (r, r)
    Qa, Ra = torch.linalg.qr(A.T)          # (in, r), (r, r)
    core = mod.scaling * (Rb @ Ra.T)
    Uc, S, Vhc = torch.linalg.svd(core)
    U, V = Qb @ Uc, Qa @ Vhc.T
    if mod.fan_in_fan_out:  # the layer computes x @ (B A): the weight is the transpose
        U, V = V, U
    return LowRankSVD(U, S, V)


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


# ---------------------------------------------------------------------------------------------- figures
def save_figure(fig: Any, path: str | Path, dpi: int = 130) -> Path:
    """Render to memory, then write the PNG atomically."""
    import matplotlib.pyplot as plt

    from lorank.atomic import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_csv(path: str | Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> Path:
    import csv

    from lorank.atomic import atomic_open

    with atomic_open(path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in columns})
    return Path(path)
