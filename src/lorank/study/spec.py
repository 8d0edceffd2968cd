"""The study spec: one YAML file describing a whole study, typed and validated before any work starts.

```yaml
name: demo
models: [smollm2-135m]
train: {data: [{kind: trec, path: dl20}], group_size: 8, max_steps: 40, checkpoints: {steps: "20,40"},
        eval: {sets: [dl19], depth: 20}}      # every TrainConfig field except model / lora / output_dir
lora: {rank: 8, alpha: 64, dropout: 0.1}     # defaults of every run
grid:                                        # blocks; each block is a product of its axes; runs are the union
  - {rank: [1, 2, 8, 32]}
  - {rank: [1, 2, 32], alpha_policy: [scale, rslora]}   # alpha x r/8 and alpha x sqrt(r/8) (lora.alpha_rank: 8)
  - {components: [mha, mlp]}
seeds: [42, 43, 44]                          # every block without its own `seed` axis, trained once per seed
ablations:
  - {runs: {rank: 8, components: all}, sweeps: [components, projections, layer-windows], eval: dl19}
analyses:
  - {kind: weights, runs: {rank: 8, components: all}}
  - {kind: ltr, runs: {rank: 8, components: all}, options: {train: dl20, test: dl19, depth: 100}}
report: {reference: {rank: 8, components: all}}
```

Ablations and analyses may dissect an adapter the study did not train (lorank.study.external):
``adapters: {reference: adapters/smollm2-135m-msmarco12k-r8}`` and ``adapter: reference`` in a step, in place
of its ``runs:`` selector.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from lorank.ablate.windows import PAPER_WINDOW, Window, read_window
from lorank.config import Strict, format_validation_error, read_yaml
from lorank.data.sources import expand_data_path
from lorank.errors import ConfigError
from lorank.lora.spec import ALPHA_POLICY_LABELS, VARIANT_BLOCKS, parse_alpha
from lorank.train.config import TrainConfig

AXES = ("rank", "alpha", "dropout", "components", "projections", "layers", "variant", "alpha_policy", "seed")
ANALYSES = ("weights", "compare", "probe", "patch", "ltr")


class GridBlock(Strict):
    """One block of the LoRA grid: the product of the axes it lists (others keep the `lora` defaults)."""

    rank: list[int] | None = None
    alpha: list[float | str] | None = None
    dropout: list[float] | None = None
    components: list[Literal["all", "mha", "mlp"]] | None = None
    projections: list[list[str] | str | None] | None = None
    layers: list[str | int | list[int]] | None = None
    #: dylora / adalora take their settings from the spec's `lora:` section (lora.dylora, lora.adalora)
    variant: list[Literal["lora", "dora", "rslora", "dylora", "adalora"]] | None = None
    #: how alpha follows the rank (lorank.lora.spec.effective_alpha); the run's axes carry the effective alpha
    alpha_policy: list[Literal["fixed", "scale", "rslora"]] | None = None
    #: a block's own seeds; a block without them trains every seed of the spec's `seeds` (else train.seed)
    seed: list[int] | None = None


class AblationStep(Strict):
    """Inference-time ablation sweeps on the last checkpoint of every run the selector matches, or on the
    external adapter `adapter` (a name from the spec's `adapters`), not both."""

    runs: dict[str, Any] | None = None  # axis -> value; {} or not given = every run
    adapter: str | None = None
    sweeps: list[str]
    eval: str = "dl19"
    depth: int = Field(100, ge=1)
    max_queries: int | None = Field(None, ge=1)
    window: int = Field(11, ge=1)
    use_cache: bool = True


class AnalysisStep(Strict):
    """An adapter analysis (lorank.analyze) on every run the selector matches.

    `compare` compares each matched run with `against` (a selector matching one run), or, when
    `against` is not given, the run's first checkpoint with its last. `ltr` (lorank.ltr.ltr_study_step):
    latent-feature tables of `options.train` (default dl20) and `options.test` (dl19), then LambdaMART rows.
    `adapter` (a name from the spec's `adapters`) in place of `runs` analyses an external adapter.
    """

    kind: Literal["weights", "compare", "probe", "patch", "ltr"]
    runs: dict[str, Any] | None = None  # {} or not given = every run
    adapter: str | None = None
    against: dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ReportSpec(Strict):
    #: the "full adapter" every table is compared against (significance, % recovered)
    reference: dict[str, Any] = Field(default_factory=lambda: {"rank": 8, "components": "all"})
    measures: list[str] = Field(default_factory=lambda: ["ndcg_cut_10", "recip_rank_10"])
    #: the evaluation sets whose queries the findings pool (query ids must not overlap: DL19 and DL20 do not);
    #: each must be in train.eval.sets. Empty: the first of train.eval.sets alone.
    findings_sets: list[str] = Field(default_factory=list)
    #: the test sets whose queries decide the verdicts (reported, never used to choose): each is scored on the
    #: runs' final checkpoints (train.eval.test_sets) or ablated. Empty: train.eval.test_sets
    test_sets: list[str] = Field(default_factory=list)


class VerdictSpec(Strict):
    """The verdict rules, declared before any run (lorank.report.findings_model.VerdictRules; docs/protocol.md)."""

    alpha: float = Field(0.05, gt=0, lt=1)
    #: a "comparable" claim holds only when TOST shows every pair within +-margin (nDCG@10)
    equivalence_margin: float = Field(0.02, gt=0)
    #: finding 5: the recovered fraction must be shown above this line (one-sided non-inferiority)
    recover_line: float = Field(0.90, gt=0, le=1)
    correction: Literal["holm", "bh"] = "holm"
    #: the findings whose deciding tests form the study-wide family; the others are labelled exploratory
    confirmatory: list[Literal[1, 2, 3, 4, 5]] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    #: test: verdicts on the test sets' queries (dev reported beside them); pooled: dev + test queries together
    decide_on: Literal["test", "pooled"] = "test"
    bootstrap: int = Field(2000, ge=200)
    #: finding 4: the layer window its "layers 5-15 contribute most" is tested on, "first-last" or [first, last]:
    #: the paper's 5-15 (of 32 layers) by default; on a model of another depth the same depth fraction (e.g. 3-9 of
    #: 18 layers for 5-15 of 30). The layer-windows sweep scores it beside its regular windows.
    target_window: Window = PAPER_WINDOW

    @field_validator("target_window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> Window:
        return read_window(v)


class StudySpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    models: list[str] = Field(min_length=1)
    data_root: str | None = None
    train: dict[str, Any]
    lora: dict[str, Any] = Field(default_factory=dict)
    grid: list[GridBlock] = Field(default_factory=lambda: [GridBlock()])
    #: seeds as a grid dimension: every block that does not set `seed` itself trains each of them (run ids
    #: ...-s42-, -s43-, ...; lorank.study.spec.condition_of groups them). null: train.seed alone, as before
    seeds: list[int] | None = Field(None, min_length=1)
    #: external adapters (name -> folder; a relative folder is looked up in the working directory, then the
    #: repository root), dissected by the steps that name them (`adapter: name`)
    adapters: dict[str, str] = Field(default_factory=dict)
    ablations: list[AblationStep] = Field(default_factory=list)
    analyses: list[AnalysisStep] = Field(default_factory=list)
    report: ReportSpec = Field(default_factory=ReportSpec)
    verdicts: VerdictSpec = Field(default_factory=VerdictSpec)


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid: readable id + short hash of the resolved config."""

    run_id: str
    model: str
    axes: dict[str, Any]
    train_config: dict[str, Any]  # a full TrainConfig dict, output_dir left out (the executor sets it)
    config_hash: str
    label: str = ""  # the readable part of the id, without model and hash (r8-all-s42)

    def matches(self, selector: dict[str, Any]) -> bool:
        for k, v in selector.items():
            have = self.model if k == "model" else self.axes.get(k)
            if k == "model":
                if str(v) != have and _slug(str(v)) != _slug(have):
                    return False
            elif k == "alpha" and isinstance(v, str):  # "8r": the alpha it gives at this run's rank

                try:
                    if have is None or abs(parse_alpha(v, int(self.axes.get("rank") or 1)) - float(have)) > 1e-9:
                        return False
                except (ConfigError, TypeError, ValueError):
                    return False
            elif _norm(have) != _norm(v):
                return False
        return True


def condition_of(run: Any) -> str:
    """The run's label without its seed part (``r8-all-s43`` -> ``r8-all``): the seeds of one condition share it
    (within one model: group by ``(run.model, condition_of(run))`` in a study of several). A label string works
    too; a run without a label (an external adapter) is its own condition."""
    label = run if isinstance(run, str) else (getattr(run, "label", "") or str(getattr(run, "run_id", run)))
    return re.sub(r"-s-?\d+$", "", label)


def _norm(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


def config_hash(obj: Any, n: int = 8) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def _slug(s: str) -> str:
    s = Path(str(s)).name if ("/" in str(s) and Path(str(s)).exists()) else str(s)
    s = s.split("/")[-1]
    s = re.sub(r"\.gguf$", "", s, flags=re.I)
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-").lower()[:40] or "model"


def _axis_slug(axes: dict[str, Any], defaults: dict[str, Any]) -> str:
    parts = [f"r{axes['rank']}", str(axes["components"])]
    if axes.get("projections"):
        p = axes["projections"]
        parts.append("p-" + ("+".join(p) if isinstance(p, list) else str(p)).replace("_proj", ""))
    if str(axes.get("layers", "all")) != "all":
        lay = axes["layers"]
        parts.append("L" + (",".join(map(str, lay)) if isinstance(lay, list) else str(lay)))
    if axes.get("variant", "lora") != "lora":
        parts.append(str(axes["variant"]))
    if axes.get("alpha_policy", "fixed") != "fixed":
        parts.append(ALPHA_POLICY_LABELS.get(str(axes["alpha_policy"]), str(axes["alpha_policy"])))
    if axes.get("alpha") != defaults.get("alpha"):
        parts.append(f"a{axes['alpha']}")
    if axes.get("dropout") != defaults.get("dropout"):
        parts.append(f"d{axes['dropout']}")
    parts.append(f"s{axes['seed']}")
    return "-".join(re.sub(r"[^A-Za-z0-9.,+=-]+", "", str(p)) for p in parts)


def load_spec(path: str | Path) -> StudySpec:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("the top level of a study spec must be a mapping", path)
    try:
        return StudySpec.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, StudySpec, path), path) from None


def expand(spec: StudySpec, source: str | Path | None = None, problems: list[str] | None = None) -> list[RunSpec]:
    """The grid as a list of runs (deduplicated, in spec order). Raises ConfigError listing every problem, or,
    when a `problems` list is given, appends to it and returns the valid runs."""
    collect = problems is not None
    problems = problems if problems is not None else []
    banned = {"model", "lora", "output_dir"} & set(spec.train)
    if banned:
        problems.append(f"train: {', '.join(sorted(banned))} are set by the study (models / lora / grid), not in train")
    lora_defaults = {"rank": 8, "alpha": 64, "dropout": 0.1, "components": "all", "projections": None,
                     "layers": "all", "variant": "lora", "alpha_policy": "fixed", "alpha_rank": 8,
                     **{k: v for k, v in spec.lora.items()}}
    seed_default = spec.train.get("seed", 42)
    runs: list[RunSpec] = []
    seen: set[str] = set()  # config hashes: a run met again under another label (r8 under scale = r8 fixed) is one
    for model in spec.models:
        for bi, block in enumerate(spec.grid):
            axes_lists = {a: getattr(block, a) for a in AXES if getattr(block, a) is not None}
            if spec.seeds is not None and block.seed is None:
                axes_lists["seed"] = list(spec.seeds)
            names = list(axes_lists)
            for values in itertools.product(*(axes_lists[a] for a in names)) if names else [()]:
                axes = {**{k: v for k, v in lora_defaults.items() if k not in VARIANT_BLOCKS}, "seed": seed_default,
                        **dict(zip(names, values))}
                lora = {k: axes[k] for k in ("rank", "alpha", "dropout", "components", "projections", "layers",
                                             "variant", "alpha_policy", "alpha_rank") if k in axes}
                if axes.get("variant") in VARIANT_BLOCKS and axes["variant"] in lora_defaults:
                    lora[axes["variant"]] = lora_defaults[axes["variant"]]  # its own block, for its runs only
                train = {k: v for k, v in spec.train.items() if k not in banned}
                if isinstance(train.get("data"), list):  # ${VAR} in data paths: expanded (LORANK_DATA: the data root)
                    train["data"] = [dict(d, path=expand_data_path(d["path"], spec.data_root))
                                     if isinstance(d, dict) and
                                     isinstance(d.get("path"), str) else d for d in train["data"]]
                if spec.data_root and "data_root" not in train:
                    train["data_root"] = spec.data_root
                cfg = {**train, "model": model, "lora": lora, "seed": axes["seed"]}
                try:
                    tc = TrainConfig.from_dict({**cfg, "output_dir": "_"})
                except ConfigError as e:
                    where = f"grid block {bi + 1} ({model}, {_axis_slug(axes, lora_defaults)})"
                    problems.extend(f"{where}: {p}" for p in e.problems)
                    continue
                resolved = tc.model_dump()
                resolved.pop("output_dir", None)
                identity = tc.identity()  # execution settings at their defaults are not part of the run's hash
                identity.pop("output_dir", None)
                h = config_hash(identity)
                label = _axis_slug(axes, lora_defaults)
                rid = f"{_slug(model)}-{label}-{h[:6]}"
                if h in seen:
                    continue
                seen.add(h)
                # selectors, results.csv and the findings read the alpha PEFT trains with, beside its policy
                axes = {**axes, "alpha": _norm(tc.lora.effective_alpha()), "alpha_policy": tc.lora.alpha_policy}
                runs.append(RunSpec(rid, model, axes, resolved, h, label))
    if problems and not collect:
        raise ConfigError(_dedup(problems), source)
    return runs


def _dedup(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
