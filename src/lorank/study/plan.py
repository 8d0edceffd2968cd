"""A study's plan: the ordered steps (train, ablate, analyze), their hashes and estimated costs.

Every problem in a spec is found here, before any work starts, and reported at once.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from lorank.ablate.sweeps import SWEEPS
from lorank.ablate.windows import PAPER_WINDOW, window_label, window_problem
from lorank.data.msmarco import resolve_msmarco_dir
from lorank.data.sources import _roots, EVAL_SETS
from lorank.errors import ConfigError, DataError
from lorank.layout.study import run_out_dir, train_step_id
from lorank.lora.spec import LoraSpec
from lorank.ltr.pipeline import check_options, estimate_pairs
from lorank.models.arch import arch_for
from lorank.models.random_init import config_for
from lorank.study.cost import (AVG_TOKENS, ablation_estimate, analysis_estimate, cpu_flops, cpu_precision, model_rates,
                               sweep_size, train_estimate)
from lorank.study.external import REPO_ROOT, ExternalAdapter, PendingAdapter, resolve_adapters
from lorank.study.spec import ANALYSES, AXES, RunSpec, StudySpec, condition_of, config_hash, expand

log = logging.getLogger("lorank.study")

#: nominal effective FLOP/s of cost estimates: (training, scoring). On a CPU a plan uses the rates measured in the
#: precision the run will use (lorank.study.cost.CPU_MEASURED: bf16 or fp32); the fp32 pair stands here.
RATES = {"cpu": cpu_flops("fp32")[:2], "cuda": (0.40 * 989e12, 0.30 * 989e12)}


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

    def runs_needed(self, finished: Collection[str]) -> set[str]:
        """The run ids whose adapter a step not finished yet reads (an analysis's run and its counterpart), besides
        the runs' own training steps."""
        by_id = {s.step_id: s for s in self.steps}
        needed = set()
        for step in self.steps:
            if step.kind == "train" or step.step_id in finished:
                continue
            needed.update(by_id[n].run_id for n in step.needs if n in by_id and by_id[n].kind == "train")
        return needed


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
                ("pythia-6.9b", "pythia-6.9b"), ("gemma3-270m", "gemma3-270m"),
                ("smollm2-135m", "smollm2-135m-shape"), ("default", "smollm2-135m-shape"))


def model_config(model: str) -> Any | None:
    """The HF config of a model without loading (or downloading) its weights, when it can be known offline:
    a local folder's config.json, the embedded default, or a known public shape (Llama-3.1-8B, Mistral-7B,
    Pythia-6.9B, Gemma 3 270M). None otherwise (validated at training time)."""
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

                try:
                    resolve_msmarco_dir(d["path"], spec.data_root)
                except DataError:
                    problems.append(f"train.data[{i}]: MS MARCO training folder {d['path']!r} not found (looked in "
                                    "--data, $LORANK_DATA, ../shared/data)")
            elif not Path(d["path"]).is_file():
                problems.append(f"train.data[{i}]: file not found: {d['path']}")
        ev = r.train_config.get("eval", {})
        for key, name in [("sets", n) for n in ev.get("sets", [])] + [("test_sets", n) for n in
                                                                      ev.get("test_sets", [])]:
            if f"eval:{name}" not in checked:
                checked.add(f"eval:{name}")
                if not named_set_ok(name):
                    problems.append(f"train.eval.{key}: evaluation set {name!r} not found")
    for i, a in enumerate(spec.ablations):
        if f"eval:{a.eval}" not in checked:
            checked.add(f"eval:{a.eval}")
            if not named_set_ok(a.eval):
                problems.append(f"ablations[{i}].eval: evaluation set {a.eval!r} not found")
    return problems


def build_plan(spec: StudySpec, source: str | Path | None = None, check_data: bool = True,
               device: str | None = None) -> Plan:
    """The study's steps in order (train, then ablate, then analyze), each with its hash and estimated cost; every
    problem in the spec is collected on the way and raised at once (a ConfigError)."""
    planner = _Planner(spec, source, device or _device())
    planner.price_models()
    steps = planner.train_steps()
    planner.add_adapters()
    planner.check_target_window()
    steps += planner.ablation_steps()
    steps += planner.analysis_steps()
    planner.check_report()
    data_problems = _data_problems(spec, planner.runs) if check_data else []
    if planner.problems:
        raise ConfigError(list(dict.fromkeys(planner.problems + data_problems)), source)
    return Plan(spec, planner.runs, steps, planner.device, planner.notes, data_problems, planner.adapters,
                planner.pending)


#: what a step works on: a run of the grid, an external adapter, or one whose folder does not exist yet
Subject = RunSpec | ExternalAdapter | PendingAdapter


class _Planner:
    """The state :func:`build_plan` builds up: the grid's runs, the problems and notes found so far, each model's
    size and rates (for the estimates), the external adapters, the train steps (whose hashes analyses follow)."""

    def __init__(self, spec: StudySpec, source: str | Path | None, device: str):
        self.spec, self.source, self.device = spec, source, device
        self.problems: list[str] = []
        self.runs = expand(spec, source, self.problems)
        self.notes: list[str] = []
        if device not in RATES:
            raise ConfigError(f"unknown device {device!r} for cost estimates (known: {', '.join(RATES)})")
        self.precision, self.why = cpu_precision(spec.train.get("dtype", "auto")) if device == "cpu" else ("", "")
        self.sizes: dict[str, int | None] = {}
        self.rates: dict[str, Any] = {}
        self.adapters: dict[str, ExternalAdapter] = {}
        self.pending: dict[str, PendingAdapter] = {}
        self.trains: dict[str, Step] = {}

    def price_models(self) -> None:
        """Each model's size and rates; its family, projections and layers checked against the config where it is
        known offline (every run's LoRA spec validated against it)."""
        for model in self.spec.models:
            cfg = model_config(model)
            if cfg is None:
                self.sizes[model] = None
                self.notes.append(f"{model}: config not available offline; LoRA targets are checked when training "
                                  "starts")
                continue
            self.sizes[model] = count_params(cfg)
            self.rates[model] = self._rates(model)
            if self.rates[model].note:
                self.notes.append(f"cost basis: {self.rates[model].note}")
            try:
                arch = arch_for(cfg)
            except ConfigError as e:
                self.problems.extend(e.problems)
                continue
            for r in self.runs:
                if r.model == model:
                    ls = LoraSpec.from_dict(r.train_config["lora"])
                    self.problems.extend(f"run {r.run_id}: {p}" for p in ls.validate(arch, cfg.num_hidden_layers))

    def _rates(self, model: str) -> Any:
        return model_rates(self.device, model, self.sizes[model], RATES[self.device], self.precision, self.why)

    def train_steps(self) -> list[Step]:
        steps = []
        for r in self.runs:
            tc = r.train_config
            n = self.sizes.get(r.model)
            est = train_estimate(tc, n, self.rates[r.model]) if n else 0.0
            s = Step(train_step_id(r.run_id), "train", r.run_id, {"config": tc}, run_out_dir(r.run_id), r.config_hash,
                     estimate_s=est)
            steps.append(s)
            self.trains[r.run_id] = s
        return steps

    def add_adapters(self) -> None:
        """The spec's external adapters (a folder not there yet: pending), and the sizes of their base models."""
        self.adapters = resolve_adapters(self.spec.adapters, REPO_ROOT, self.problems, self.pending, self.spec.models)
        for p in self.pending.values():
            self.notes.append(p.reason())
        for ext in [*self.adapters.values(), *self.pending.values()]:  # cost estimates for its base model, when known
            if ext.model not in self.sizes:
                cfg = model_config(ext.model)
                self.sizes[ext.model] = count_params(cfg) if cfg is not None else None
                if self.sizes[ext.model]:
                    self.rates[ext.model] = self._rates(ext.model)

    def select(self, selector: dict[str, Any], where: str) -> list[RunSpec]:
        bad = [k for k in selector if k not in (*AXES, "model")]
        if bad:
            self.problems.append(f"{where}: unknown selector key(s) {', '.join(bad)} (use model or a grid axis)")
            return []
        hit = [r for r in self.runs if r.matches(selector)]
        if not hit:
            self.problems.append(f"{where}: the selector {selector} matches no run of the grid")
        return hit

    def subjects(self, step: Any, where: str) -> list[Subject]:
        """The runs a step's selector matches, or its external adapter (a problem when it names both or an
        unknown one)."""
        if step.adapter is None:
            return self.select(step.runs or {}, f"{where}.runs")
        if step.runs is not None:
            self.problems.append(f"{where}: give either runs (a selector of the study's runs) or adapter (a name from "
                                 f"adapters), not both")
            return []
        if step.adapter not in self.spec.adapters:
            self.problems.append(f"{where}.adapter: unknown adapter {step.adapter!r} (adapters: "
                                 + (", ".join(self.spec.adapters) or "none given") + ")")
            return []
        ext = self.adapters.get(step.adapter) or self.pending.get(step.adapter)
        return [ext] if ext is not None else []  # an unusable folder is already a problem

    def _n_layers(self, model: str) -> int:
        return model_config(model).num_hidden_layers if self.sizes.get(model) else 30

    def check_target_window(self) -> None:
        """A declared ``verdicts.target_window`` must lie within the layers of every model whose layer count the plan
        knows (the study's models, the external adapters' base models); the paper's 5-15 is left to finding 4 to
        report (a tiny test model has fewer layers)."""
        target = self.spec.verdicts.target_window
        if target == PAPER_WINDOW:
            return
        models = [*self.spec.models, *(e.model for e in [*self.adapters.values(), *self.pending.values()])]
        for model in dict.fromkeys(models):
            problem = window_problem(target, self._n_layers(model), model) if self.sizes.get(model) else None
            if problem:
                self.problems.append(f"verdicts.target_window: {problem}")

    def _window_payload(self, a: Any, i: int) -> dict[str, Any]:
        """What a layer-windows step adds to its payload (and so to its hash) for a declared target window: nothing
        for the paper's 5-15, so that the steps of a study that declares none keep their hashes."""
        target = self.spec.verdicts.target_window
        if target == PAPER_WINDOW or "layer-windows" not in a.sweeps:
            return {}
        if a.window != target[1] - target[0] + 1:
            self.notes.append(f"ablations[{i}]: the declared verdicts.target_window {window_label(target)} is "
                              f"{target[1] - target[0] + 1} layers wide, its layer windows {a.window}: finding 4 "
                              "compares the target only with windows of its own width")
        return {"target_window": list(target)}

    def ablation_steps(self) -> list[Step]:
        """One ablate step per (ablation, subject), after its run's training."""
        steps = []
        target = self.spec.verdicts.target_window
        for i, a in enumerate(self.spec.ablations):
            bad = [sw for sw in a.sweeps if sw not in SWEEPS]
            if bad:
                self.problems.append(f"ablations[{i}].sweeps: unknown sweep(s) {', '.join(bad)} (known: "
                                     f"{', '.join(SWEEPS)})")
            window_payload = self._window_payload(a, i)
            for r in self.subjects(a, f"ablations[{i}]"):
                payload = a.model_dump()
                payload.pop("runs")
                payload.pop("adapter")
                if self.spec.data_root:
                    payload["data_root"] = self.spec.data_root
                payload.update(window_payload)
                h = config_hash({**_identity(r), **payload})
                folder, needs, extra = _placement(r)
                n = self.sizes.get(r.model)
                n_layers = self._n_layers(r.model)
                configs = sum(sweep_size(sw, n_layers, a.window, r.axes, target) for sw in a.sweeps if sw in SWEEPS)
                est = ablation_estimate(configs, a.eval, a.max_queries, a.depth, n, self.rates[r.model]) if n else 0.0
                steps.append(Step(f"ablate/{folder}/{i}", "ablate", r.run_id, {**payload, **extra},
                                  f"ablations/{folder}/{i}", h, needs, est, _waits(r)))
        return steps

    def analysis_steps(self) -> list[Step]:
        """One analyze step per (analysis, subject), after the trainings it reads (its run's, its counterpart's)."""
        steps = []
        for i, a in enumerate(self.spec.analyses):
            if a.kind not in ANALYSES:  # pragma: no cover - pydantic checks the literal
                self.problems.append(f"analyses[{i}].kind: unknown {a.kind!r}")
            if a.against:
                self.select(a.against, f"analyses[{i}].against")
            if a.kind == "compare" and a.adapter is not None and not a.against:
                self.problems.append(f"analyses[{i}]: compare on the external adapter {a.adapter!r} needs `against` (a "
                                     "selector of one study run): an adapter folder holds one state, not first and "
                                     "last checkpoints")
                continue
            for r in self.subjects(a, f"analyses[{i}]"):
                other = self._counterpart(a, r, i) if a.against else None
                if other is not _SKIP:
                    steps.append(self._analysis_step(a, i, r, other))
        return steps

    def _counterpart(self, a: Any, r: Subject, i: int) -> Any:
        """The run ``against`` selects for ``r``: within the same model unless the selector names one, and of the
        same seed when the grid has seeds; :data:`_SKIP` when there is none to compare with (a problem when the
        selector does not match exactly one run)."""
        sel = a.against if "model" in a.against else {**a.against, "model": r.model}
        others = [o for o in self.runs if o.matches(sel)]
        if len(others) > 1 and "seed" not in sel:  # seeds in the grid: the counterpart of the same seed
            others = [o for o in others if o.axes.get("seed") == r.axes.get("seed")] or others
        if len(others) != 1:
            self.problems.append(f"analyses[{i}].against: {sel} must match exactly one run, matched "
                                 + (", ".join(o.run_id for o in others) or "none"))
            return _SKIP
        other = others[0].run_id
        return _SKIP if other == r.run_id else other

    def _analysis_step(self, a: Any, i: int, r: Subject, other: str | None) -> Step:
        payload = {"kind": a.kind, "options": a.options, "against": other}
        if self.spec.data_root:
            payload["data_root"] = self.spec.data_root
        h = config_hash({**_identity(r), "other": self.trains[other].hash if other else None, **payload})
        folder, needs, extra = _placement(r)
        tail = folder + (f"~{other}" if other else "") + f"/{i}"
        needs = needs + ([train_step_id(other)] if other else [])
        n = self.sizes.get(r.model) or 0
        n_layers = self._n_layers(r.model)
        est = analysis_estimate(a.kind, a.options, n, n_layers, self.rates[r.model]) if n else 0.0
        if a.kind == "ltr":  # one forward per pair of both feature tables, then seconds of LightGBM

            self.problems.extend(f"analyses[{i}].{p}" for p in check_options(a.options))
            est = estimate_pairs(a.options) * AVG_TOKENS * 2 * n / self.rates[r.model].score + 60 if n else 0.0
        return Step(f"analyze/{a.kind}/{tail}", "analyze", r.run_id, {**payload, **extra},
                    f"analyses/{a.kind}/{tail}", h, needs, est, _waits(r))

    def check_report(self) -> None:
        """Notes on the seeds and the report's reference run; the findings' sets must be evaluated ones."""
        spec, runs = self.spec, self.runs
        if spec.seeds is not None:
            conditions = {(r.model, condition_of(r)) for r in runs}
            self.notes.append(f"seeds {', '.join(map(str, spec.seeds))}: {len(runs)} runs of {len(conditions)} "
                              "conditions (a grid block with its own seed axis keeps it)")
        if spec.report.reference and not any(r.matches(spec.report.reference) for r in runs):
            self.notes.append(f"report.reference {spec.report.reference} matches no run: the first run with "
                              "components=all is the reference")
        evaluated = {x for r in runs for x in r.train_config.get("eval", {}).get("sets", [])}
        for x in spec.report.findings_sets:
            if x not in evaluated:
                self.problems.append(f"report.findings_sets: {x!r} is not in train.eval.sets "
                                     f"({', '.join(sorted(evaluated)) or 'none'}): the findings pool the sets the "
                                     "checkpoints are evaluated on")


#: :meth:`_Planner._counterpart`'s answer when an analysis has no step for a subject
_SKIP = object()


def _identity(subj: Subject) -> dict[str, Any]:
    """What a step's hash follows besides its settings: the run's config, or the adapter's contents."""
    return {"train": subj.config_hash} if isinstance(subj, RunSpec) else {"adapter": subj.config_hash}


def _placement(subj: Subject) -> tuple[str, list[str], dict[str, Any]]:
    """(folder part of step ids and out dirs, steps it needs, payload additions)."""
    if isinstance(subj, RunSpec):
        return subj.run_id, [train_step_id(subj.run_id)], {}
    return subj.slug, [], {"adapter_path": str(subj.path)}


def _waits(subj: Subject) -> str:
    return subj.reason() if isinstance(subj, PendingAdapter) else ""


def plan_hash(plan: Plan) -> str:
    return config_hash([s.hash for s in plan.steps])
