"""A study's plan: the ordered steps (train, ablate, analyze), their hashes and estimated costs.

Every problem in a spec is found here, before any work starts, and reported at once.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorank.errors import ConfigError
from lorank.study.cost import AVG_TOKENS, cpu_flops
from lorank.study.external import ExternalAdapter, PendingAdapter, resolve_adapters
from lorank.study.spec import ANALYSES, AXES, RunSpec, StudySpec, config_hash, expand

log = logging.getLogger("lorank.study")

#: nominal effective FLOP/s of cost estimates: (training, scoring). On a CPU a plan uses the rates measured in the
#: precision the run will use (lorank.study.cost.CPU_MEASURED: bf16 or fp32); the fp32 pair stands here.
RATES = {"cpu": cpu_flops("fp32"), "cuda": (0.40 * 989e12, 0.30 * 989e12)}


@dataclass
class Step:
    step_id: str  # unique, readable: train/<run>, ablate/<run>, analyze/<kind>/<run>[~<other>]
    kind: str  # train | ablate | analyze
    run_id: str  # the study run it works on, or adapter:<name> for an external adapter
    payload: dict[str, Any]  # what the worker needs
    out_dir: str  # relative to the study dir
    hash: str
    needs: list[str] = field(default_factory=list)  # step ids that must have succeeded first
    estimate_s: float = 0.0
    #: why the step cannot run yet (its external adapter's folder does not exist); "" = runnable
    pending: str = ""


@dataclass
class Plan:
    spec: StudySpec
    runs: list[RunSpec]
    steps: list[Step]
    device: str
    notes: list[str] = field(default_factory=list)
    #: data not found on this machine: an error for a real run, a warning for a dry run (the study may be
    #: planned here and run on a machine that has the data)
    data_problems: list[str] = field(default_factory=list)
    #: the spec's external adapters by name (lorank.study.external)
    adapters: dict[str, ExternalAdapter] = field(default_factory=dict)
    #: the spec's adapters whose folder does not exist (yet): their steps are planned as pending
    pending_adapters: dict[str, PendingAdapter] = field(default_factory=dict)

    @property
    def estimate_s(self) -> float:
        return sum(s.estimate_s for s in self.steps)

    def run(self, run_id: str) -> RunSpec:
        return next(r for r in self.runs if r.run_id == run_id)


def _device() -> str:
    forced = os.environ.get("LORANK_DEVICE")
    if forced:
        return forced
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


_SHAPE_HINTS = (("llama-3.1-8b", "llama-3.1-8b"), ("llama-3-8b", "llama-3.1-8b"), ("mistral-7b", "mistral-7b"),
                ("pythia-6.9b", "pythia-6.9b"), ("smollm2-135m", "smollm2-135m-shape"), ("default", "smollm2-135m-shape"))


def model_config(model: str) -> Any | None:
    """The HF config of a model without loading (or downloading) its weights, when it can be known offline:
    a local folder's config.json, the embedded default, or a known public shape (Llama-3.1-8B, Mistral-7B,
    Pythia-6.9B). None otherwise (validated at training time)."""
    from lorank.models.random_init import config_for

    p = Path(model)
    if p.is_dir() and (p / "config.json").is_file():
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(str(p))
        except (OSError, ValueError, KeyError) as e:  # not a config transformers knows: validated at training time
            log.warning("%s: config.json not readable by transformers (%s); cost estimate without it", p, e)
            return None
    low = model.lower()
    for hint, shape in _SHAPE_HINTS:
        if hint in low:
            return config_for(shape)
    return None


def count_params(cfg: Any) -> int:
    """Parameters of the transformer body (embeddings excluded: they cost no FLOPs), from the config alone."""
    h = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", 4 * h)
    n_layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    gated = getattr(cfg, "model_type", "") not in ("gpt_neox",)
    mlp = (3 if gated else 2) * h * inter
    return n_layers * (attn + mlp)


def _data_problems(spec: StudySpec, runs: list[RunSpec]) -> list[str]:
    from lorank.data.sources import EVAL_SETS, _roots

    problems = []

    def named_set_ok(name: str) -> bool:
        if Path(name).is_dir():
            return True
        key = name.strip().lower()
        if key not in EVAL_SETS:
            return False
        folder = EVAL_SETS[key][0]
        for _, root in _roots(spec.data_root):
            if root is not None and (root / folder / "queries.tsv").is_file():
                return True
        if EVAL_SETS[key][1] is None:  # DL22, the SPLADE++ folders: no ir_datasets equal
            return False
        try:  # the online fallback: ir_datasets, when installed
            import importlib.util

            return importlib.util.find_spec("ir_datasets") is not None
        except (ImportError, ValueError):  # pragma: no cover
            return False

    checked: set[str] = set()
    for r in runs:
        for i, d in enumerate(r.train_config.get("data", [])):
            key = f"{d['kind']}:{d['path']}"
            if key in checked:
                continue
            checked.add(key)
            if d["kind"] == "trec":
                if not named_set_ok(d["path"]):
                    problems.append(f"train.data[{i}]: TREC set {d['path']!r} not found (looked in --data, "
                                    "$LORANK_DATA, ../shared/data, ir_datasets)")
            elif d["kind"] == "msmarco":  # a folder, by path or by name under the data root
                from lorank.data.msmarco import resolve_msmarco_dir
                from lorank.errors import DataError

                try:
                    resolve_msmarco_dir(d["path"], spec.data_root)
                except DataError:
                    problems.append(f"train.data[{i}]: MS MARCO training folder {d['path']!r} not found (looked in "
                                    "--data, $LORANK_DATA, ../shared/data)")
            elif not Path(d["path"]).is_file():
                problems.append(f"train.data[{i}]: file not found: {d['path']}")
        ev = r.train_config.get("eval", {})
        for field, name in [("sets", n) for n in ev.get("sets", [])] + [("test_sets", n) for n in
                                                                        ev.get("test_sets", [])]:
            if f"eval:{name}" not in checked:
                checked.add(f"eval:{name}")
                if not named_set_ok(name):
                    problems.append(f"train.eval.{field}: evaluation set {name!r} not found")
    for i, a in enumerate(spec.ablations):
        if f"eval:{a.eval}" not in checked:
            checked.add(f"eval:{a.eval}")
            if not named_set_ok(a.eval):
                problems.append(f"ablations[{i}].eval: evaluation set {a.eval!r} not found")
    return problems


def build_plan(spec: StudySpec, source: str | Path | None = None, check_data: bool = True,
               device: str | None = None) -> Plan:
    from lorank.ablate.sweeps import SWEEPS
    from lorank.study.cost import sweep_size
    from lorank.lora.spec import LoraSpec
    from lorank.models.arch import arch_for

    problems: list[str] = []
    runs = expand(spec, source, problems)
    notes: list[str] = []
    device = device or _device()
    if device not in RATES:
        raise ConfigError(f"unknown device {device!r} for cost estimates (known: {', '.join(RATES)})")
    from lorank.study.cost import ablation_estimate, analysis_estimate, cpu_precision, model_rates, train_estimate

    precision, why = cpu_precision(spec.train.get("dtype", "auto")) if device == "cpu" else ("", "")

    # models: family, projections and layers checked against the config where it is known offline
    sizes: dict[str, int | None] = {}
    rates: dict[str, Any] = {}
    for model in spec.models:
        cfg = model_config(model)
        if cfg is None:
            sizes[model] = None
            notes.append(f"{model}: config not available offline; LoRA targets are checked when training starts")
            continue
        sizes[model] = count_params(cfg)
        rates[model] = model_rates(device, model, sizes[model], RATES[device], precision, why)
        if rates[model].note:
            notes.append(f"cost basis: {rates[model].note}")
        try:
            arch = arch_for(cfg)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        for r in runs:
            if r.model != model:
                continue
            ls = LoraSpec.from_dict(r.train_config["lora"])
            for p in ls.validate(arch, cfg.num_hidden_layers):
                problems.append(f"run {r.run_id}: {p}")

    def select(selector: dict[str, Any], where: str) -> list[RunSpec]:
        bad = [k for k in selector if k not in (*AXES, "model")]
        if bad:
            problems.append(f"{where}: unknown selector key(s) {', '.join(bad)} (use model or a grid axis)")
            return []
        hit = [r for r in runs if r.matches(selector)]
        if not hit:
            problems.append(f"{where}: the selector {selector} matches no run of the grid")
        return hit

    steps: list[Step] = []
    train_steps: dict[str, Step] = {}
    for r in runs:
        tc = r.train_config
        n = sizes.get(r.model)
        est = train_estimate(tc, n, rates[r.model]) if n else 0.0
        s = Step(f"train/{r.run_id}", "train", r.run_id, {"config": tc}, f"runs/{r.run_id}", r.config_hash,
                 estimate_s=est)
        steps.append(s)
        train_steps[r.run_id] = s

    from lorank.study.external import REPO_ROOT

    pending: dict[str, PendingAdapter] = {}
    adapters = resolve_adapters(spec.adapters, REPO_ROOT, problems, pending, spec.models)
    for p in pending.values():
        notes.append(p.reason())
    for ext in [*adapters.values(), *pending.values()]:  # cost estimates for an adapter's base model, when known
        if ext.model not in sizes:
            cfg = model_config(ext.model)
            sizes[ext.model] = count_params(cfg) if cfg is not None else None
            if sizes[ext.model]:
                rates[ext.model] = model_rates(device, ext.model, sizes[ext.model], RATES[device], precision, why)

    Subject = RunSpec | ExternalAdapter | PendingAdapter

    def subjects(step: Any, where: str) -> list[Subject]:
        """The runs a step's selector matches, or its external adapter (a problem when it names both or an
        unknown one)."""
        if step.adapter is None:
            return select(step.runs or {}, f"{where}.runs")
        if step.runs is not None:
            problems.append(f"{where}: give either runs (a selector of the study's runs) or adapter (a name from "
                            f"adapters), not both")
            return []
        if step.adapter not in spec.adapters:
            problems.append(f"{where}.adapter: unknown adapter {step.adapter!r} (adapters: "
                            + (", ".join(spec.adapters) or "none given") + ")")
            return []
        ext = adapters.get(step.adapter) or pending.get(step.adapter)
        return [ext] if ext is not None else []  # an unusable folder is already a problem

    def identity(subj: Subject) -> dict[str, Any]:
        """What a step's hash follows besides its settings: the run's config, or the adapter's contents."""
        return {"train": subj.config_hash} if isinstance(subj, RunSpec) else {"adapter": subj.config_hash}

    def placement(subj: Subject) -> tuple[str, list[str], dict[str, Any]]:
        """(folder part of step ids and out dirs, steps it needs, payload additions)."""
        if isinstance(subj, RunSpec):
            return subj.run_id, [f"train/{subj.run_id}"], {}
        return subj.slug, [], {"adapter_path": str(subj.path)}

    def waits(subj: Subject) -> str:
        return subj.reason() if isinstance(subj, PendingAdapter) else ""

    for i, a in enumerate(spec.ablations):
        bad = [sw for sw in a.sweeps if sw not in SWEEPS]
        if bad:
            problems.append(f"ablations[{i}].sweeps: unknown sweep(s) {', '.join(bad)} (known: {', '.join(SWEEPS)})")
        for r in subjects(a, f"ablations[{i}]"):
            payload = a.model_dump()
            payload.pop("runs")
            payload.pop("adapter")
            if spec.data_root:
                payload["data_root"] = spec.data_root
            h = config_hash({**identity(r), **payload})
            folder, needs, extra = placement(r)
            n = sizes.get(r.model)
            n_layers = (model_config(r.model).num_hidden_layers if n else 30)
            configs = sum(sweep_size(sw, n_layers, a.window, r.axes) for sw in a.sweeps if sw in SWEEPS)
            est = ablation_estimate(configs, a.eval, a.max_queries, a.depth, n, rates[r.model]) if n else 0.0
            steps.append(Step(f"ablate/{folder}/{i}", "ablate", r.run_id, {**payload, **extra},
                              f"ablations/{folder}/{i}", h, needs, est, waits(r)))

    for i, a in enumerate(spec.analyses):
        if a.kind not in ANALYSES:  # pragma: no cover - pydantic checks the literal
            problems.append(f"analyses[{i}].kind: unknown {a.kind!r}")
        if a.against:
            select(a.against, f"analyses[{i}].against")
        if a.kind == "compare" and a.adapter is not None and not a.against:
            problems.append(f"analyses[{i}]: compare on the external adapter {a.adapter!r} needs `against` (a "
                            "selector of one study run): an adapter folder holds one state, not first and last "
                            "checkpoints")
            continue
        for r in subjects(a, f"analyses[{i}]"):
            other = None
            if a.against:  # the counterpart within the same model, unless the selector names a model
                sel = a.against if "model" in a.against else {**a.against, "model": r.model}
                others = [o for o in runs if o.matches(sel)]
                if len(others) > 1 and "seed" not in sel:  # seeds in the grid: the counterpart of the same seed
                    others = [o for o in others if o.axes.get("seed") == r.axes.get("seed")] or others
                if len(others) != 1:
                    problems.append(f"analyses[{i}].against: {sel} must match exactly one run, matched "
                                    + (", ".join(o.run_id for o in others) or "none"))
                    continue
                other = others[0].run_id
                if other == r.run_id:
                    continue
            payload = {"kind": a.kind, "options": a.options, "against": other}
            if spec.data_root:
                payload["data_root"] = spec.data_root
            h = config_hash({**identity(r), "other": train_steps[other].hash if other else None, **payload})
            folder, needs, extra = placement(r)
            tail = folder + (f"~{other}" if other else "") + f"/{i}"
            needs = needs + ([f"train/{other}"] if other else [])
            n = sizes.get(r.model) or 0
            n_layers = model_config(r.model).num_hidden_layers if n else 30
            est = analysis_estimate(a.kind, a.options, n, n_layers, rates[r.model]) if n else 0.0
            if a.kind == "ltr":  # one forward per pair of both feature tables, then seconds of LightGBM
                from lorank.ltr.pipeline import check_options, estimate_pairs

                problems.extend(f"analyses[{i}].{p}" for p in check_options(a.options))
                est = estimate_pairs(a.options) * AVG_TOKENS * 2 * n / rates[r.model].score + 60 if n else 0.0
            steps.append(Step(f"analyze/{a.kind}/{tail}", "analyze", r.run_id, {**payload, **extra},
                              f"analyses/{a.kind}/{tail}", h, needs, est, waits(r)))

    if spec.seeds is not None:
        from lorank.study.spec import condition_of

        conditions = {(r.model, condition_of(r)) for r in runs}
        notes.append(f"seeds {', '.join(map(str, spec.seeds))}: {len(runs)} runs of {len(conditions)} conditions "
                     "(a grid block with its own seed axis keeps it)")
    if spec.report.reference and not any(r.matches(spec.report.reference) for r in runs):
        notes.append(f"report.reference {spec.report.reference} matches no run: the first run with components=all "
                     "is the reference")
    evaluated = {x for r in runs for x in r.train_config.get("eval", {}).get("sets", [])}
    for x in spec.report.findings_sets:
        if x not in evaluated:
            problems.append(f"report.findings_sets: {x!r} is not in train.eval.sets ({', '.join(sorted(evaluated)) or 'none'}):"
                            " the findings pool the sets the checkpoints are evaluated on")
    data_problems = _data_problems(spec, runs) if check_data else []
    if problems:
        raise ConfigError(list(dict.fromkeys(problems + data_problems)), source)
    return Plan(spec, runs, steps, device, notes, data_problems, adapters, pending)


def plan_hash(plan: Plan) -> str:
    return config_hash([s.hash for s in plan.steps])
