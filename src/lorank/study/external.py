"""External adapters of a study: adapters it did not train (``adapters: {name: folder}``), dissected by its
ablations and analyses (``adapter: name`` instead of a ``runs:`` selector).

An external adapter is an exported adapter folder (``lorank export-adapter``), a checkpoint folder or a run folder
(its last complete checkpoint). Its identity, which the hashes of the steps on it follow, is the SHA-256 of its
weights file, ``adapter_config.json`` and lorank's metadata: a copied or cloned folder (new mtimes) keeps it, a
retrained one gets a new one, a re-export that kept the weights keeps it (:func:`lorank.adapters.adapter_identity`). Its steps' rows in ``results.csv`` carry ``run_id`` = ``adapter:<name>``.

An adapter whose folder does not exist (yet: it may still be training) is a :class:`PendingAdapter`: its steps
are planned and priced (as if its base model were the study's model) but pending; the rest of the study runs,
and a re-run once the folder exists runs them. A folder that exists but holds no usable adapter is an error.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorank.adapters import adapter_file, adapter_identity, read_checkpoint_meta, read_peft_config
from lorank.errors import ConfigError
from lorank.layout.adapter import training_config_file
from lorank.layout.checkpoints import is_checkpoint_name, latest_checkpoint, step_of
from lorank.layout.run import config_file
from lorank.lora.spec import effective_alpha

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: where a relative adapter folder is looked up after the working directory: the repository (src layout)
REPO_ROOT = Path(__file__).resolve().parents[3]
_LORA_AXES = ("rank", "alpha", "dropout", "components", "projections", "layers", "variant")


@dataclass(frozen=True)
class ExternalAdapter:
    name: str
    folder: str  # as the spec gives it
    path: Path  # the adapter folder (checkpoint) that is loaded, absolute
    config_hash: str  # content hash: weights + adapter_config.json + metadata
    meta: dict[str, Any] = field(default_factory=dict)  # lorank_meta.json (or the checkpoint's marker)
    training: dict[str, Any] = field(default_factory=dict)  # training_config.json / the run's config.json

    @property
    def run_id(self) -> str:
        """The id of its rows in results.csv."""
        return f"adapter:{self.name}"

    @property
    def slug(self) -> str:
        """Its part of step ids and output folders (no ':' in paths)."""
        return f"adapter-{self.name}"

    @property
    def model(self) -> str:
        return str(self.meta.get("base_model") or self.training.get("config", {}).get("model") or "?")

    @property
    def axes(self) -> dict[str, Any]:
        lora = self.meta.get("lora") or self.training.get("config", {}).get("lora") or {}
        axes = {k: lora.get(k) for k in _LORA_AXES}
        axes["alpha_policy"] = lora.get("alpha_policy") or "fixed"
        if lora.get("effective_alpha") is not None:  # the alpha PEFT trained with, as a study run's axes carry it
            axes["alpha"] = lora["effective_alpha"]
        elif lora.get("alpha") is not None and lora.get("rank"):
            try:
                axes["alpha"] = effective_alpha(lora["alpha"], int(lora["rank"]), axes["alpha_policy"],
                                                int(lora.get("alpha_rank") or 8))
            except (ConfigError, TypeError, ValueError):
                pass
        axes["seed"] = self.training.get("config", {}).get("seed")
        return axes

    @property
    def step(self) -> int | None:
        s = self.meta.get("step")
        return step_of(self.path) if s is None else s

    def trained_on(self) -> str:
        """The training data, from its training config ('?' when the folder does not say)."""
        data = self.training.get("config", {}).get("data") or []
        parts = [f"{d.get('kind')}:{Path(str(d.get('path'))).name}" for d in data if isinstance(d, dict)]
        return ", ".join(parts) or "?"

    def describe(self) -> str:
        """'adapter NAME (FOLDER, MODEL, trained on DATA, step N)' for the report."""
        step = self.step
        return (f"adapter {self.name} ({self.folder}, {self.model}, trained on {self.trained_on()}"
                + (f", step {step}" if step is not None else "") + ")")


@dataclass(frozen=True)
class PendingAdapter:
    """An adapter of the spec whose folder is not there: its steps wait for it."""

    name: str
    folder: str
    looked_in: tuple[str, ...]
    model: str = "?"  # assumed for cost estimates: the study's model when it has one
    axes: dict[str, Any] = field(default_factory=dict)  # unknown until it exists

    run_id = ExternalAdapter.run_id
    slug = ExternalAdapter.slug

    @property
    def path(self) -> str:
        return self.folder

    @property
    def config_hash(self) -> str:
        return f"pending:{self.folder}"

    def reason(self) -> str:
        return (f"adapter {self.name!r}: folder {self.folder!r} not found (looked in {', '.join(self.looked_in)}); "
                "its steps are pending: the rest of the study runs, and re-running the study once the folder "
                "exists runs them" + (f" (estimated as an adapter of {self.model})" if self.model != "?" else ""))

    def describe(self) -> str:
        return f"adapter {self.name} ({self.folder}, not there yet)"


def _where(folder: str, base: Path | None) -> list[Path]:
    p = Path(folder).expanduser()
    if p.is_absolute():
        return [p]
    cands = [Path.cwd() / p] + ([base / p] if base is not None else [])
    return list(dict.fromkeys(c.resolve() for c in cands))


def resolve_adapter(name: str, folder: str, base: Path | None = None) -> ExternalAdapter:
    """The adapter `name` of a spec, loaded far enough to name and hash it. A relative folder is looked up
    under the working directory, then under `base` (the repository root). Raises ConfigError naming the problem."""
    where = f"adapters.{name}"
    if not NAME.match(name):
        raise ConfigError(f"{where}: the name must be letters, digits, '.', '_' or '-' (it names folders)")
    cands = _where(folder, base)
    found = next((c for c in cands if c.is_dir()), None)
    if found is None:
        raise ConfigError(f"{where}: adapter folder {folder!r} not found (looked in "
                          + ", ".join(str(c) for c in cands) + ")")
    try:
        ckpt = latest_checkpoint(found).resolve()
        adapter_file(ckpt)  # safetensors only, structurally checked
        meta = read_checkpoint_meta(ckpt)
        read_peft_config(ckpt)
        identity = adapter_identity(ckpt)
    except ConfigError as e:
        raise ConfigError(f"{where}: {found} is not a usable adapter folder: " + "; ".join(e.problems)) from None
    training: dict[str, Any] = {}
    run_cfg = config_file(ckpt.parent) if is_checkpoint_name(ckpt) else None  # a run's checkpoint
    for f in (training_config_file(ckpt), run_cfg):
        if f is not None and f.is_file():
            training = json.loads(f.read_text(encoding="utf-8"))
            break
    return ExternalAdapter(name, folder, ckpt, identity, meta, training)


def resolve_adapters(adapters: dict[str, str], base: Path | None, problems: list[str],
                     pending: dict[str, PendingAdapter] | None = None,
                     models: list[str] | None = None) -> dict[str, ExternalAdapter]:
    """Every adapter of a spec; a problem per adapter that cannot be used (appended to `problems`). With a
    `pending` dict, an adapter whose folder does not exist goes there instead of being a problem (its base model
    assumed to be the study's, when `models` has exactly one)."""
    out = {}
    for name, folder in adapters.items():
        cands = _where(folder, base)
        if pending is not None and NAME.match(name) and not any(c.is_dir() for c in cands):
            model = models[0] if models and len(models) == 1 else "?"
            pending[name] = PendingAdapter(name, folder, tuple(str(c) for c in cands), model)
            continue
        try:
            out[name] = resolve_adapter(name, folder, base)
        except ConfigError as e:
            problems.extend(e.problems)
    return out


def adapter_axes(ext: ExternalAdapter) -> dict[str, Any]:
    """The results-table columns that identify an external adapter (as `store._axes` does for a run)."""
    a = ext.axes
    p = a.get("projections")
    lay = a.get("layers")
    return {"run_id": ext.run_id, "model": ext.model, **{k: a.get(k) for k in ("rank", "alpha", "dropout",
                                                                                "components")},
            "projections": "+".join(p) if isinstance(p, list) else (p or "all"),
            "layers": ",".join(map(str, lay)) if isinstance(lay, list) else str(lay),
            "variant": a.get("variant"), "seed": a.get("seed"), "alpha_policy": a.get("alpha_policy") or "fixed"}
