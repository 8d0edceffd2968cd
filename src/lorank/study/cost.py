"""A study's cost estimate: the rates a model runs at on a device (effective FLOP/s for training and scoring, and a
note that says where they come from) and the seconds each kind of step costs at those rates.

CPU rates are measured (`CPU_MEASURED`): SmolLM2-135M on the 2-core development CPUs, one pair of figures per
precision (bf16 on CPUs with AVX512-BF16/AMX, fp32 on AVX2-only ones: the one decision of `lorank.precision`,
which `$LORANK_BF16` overrides, so a plan made on one kind of CPU can be priced for the other); another model is
priced at the same effective FLOP/s (4N FLOPs per training token, 2N per scored token). The CUDA pair
(`lorank.study.plan.RATES`) is a fraction of the H100's dense bf16 peak, which 7B-class models approach (measured:
scoring 30-34% MFU, training 7-10%). A 135M model is nowhere near a GPU's peak (kernel launches and small matmuls
dominate), so on CUDA a small model uses a measured throughput where one exists (`MEASURED`) and otherwise says
plainly that its estimate is a lower bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lorank.ablate.windows import PAPER_WINDOW, Window, layer_windows
from lorank.precision import decide

AVG_TOKENS = 100  # a DL query + passage in the default template, in tokens (measured: 90-110; MS MARCO train ~104)
#: judged queries of the named evaluation sets (the default of `max_queries`); another set is counted as 43
SET_QUERIES = {"dl19": 43, "trec-dl-2019": 43, "dl20": 54, "trec-dl-2020": 54, "dl22": 76, "trec-dl-2022": 76,
               "dl19-splade": 43, "dl20-splade": 54, "dl22-splade": 76, "trec-dl-2019-splade": 43,
               "trec-dl-2020-splade": 54, "trec-dl-2022-splade": 76}
#: SmolLM2-135M's body parameters (`lorank.study.plan.count_params`): the model the CPU rates were measured on
CPU_REF_PARAMS = 106_168_320


@dataclass(frozen=True)
class CpuMeasured:
    train_tokens_s: float  # real training tokens/s of a `lorank train` run (packed forward)
    score_pairs_s: float  # scored pairs/s of an ablation sweep's configurations (and the analyses' passes)
    source: str
    #: reranked pairs/s of a training run's own evaluations (checkpoints, curve, test sets: the run's model, LoRA
    #: merged, load and metrics included); None: at ``score_pairs_s``
    eval_pairs_s: float | None = None


#: SmolLM2-135M, LoRA r=8 on all 7 projections, 2 queries x G=8, max length 196, 2-core CPUs
CPU_MEASURED: dict[str, CpuMeasured] = {
    "bf16": CpuMeasured(676.0, 23.0, "the seeded study's runs on the 2-core AMX Xeon (session 27, bf16, packed forward, 2 "
                                     "threads, nothing beside them): r8-all-s42 trained at 676 tokens/s (r8-mha-s44 713), "
                                     "its own evaluations (dev checkpoints, curve, DL22) ran at 30-35 pairs/s "
                                     "(results/study_smollm2_cpu_seeds, train_summary.json); an ablation sweep scores "
                                     "23.4 configuration-pairs/s with bf16 weights (results/score_dtype_ablation.json; "
                                     "14.8 with the fp32 weights loaded before session 27). Before: 500 and 13.5 (issue "
                                     "23's runs, session 10)", eval_pairs_s=32.0),
    "fp32": CpuMeasured(236.2, 6.3, "fp32 (AVX2-only CPUs), measured in session 29 on a 2-core AVX2 AMD EPYC (Zen 3), "
                                    "nothing beside it: training, the reference recipe "
                                    "(configs/train_msmarco12k_cpu_reference.yaml) at 236.2 tokens/s over steps 21-120 "
                                    "(packed forward, tcmalloc, 2 threads: results/train_rate_smollm2_fp32; session "
                                    "13's 125-129 on an EPYC of the same name predates the later training speed-ups); "
                                    "ablations, the demo's ablation step (components + 11-layer windows, 11 "
                                    "configurations x 18 DL19 queries x top-30 = 5,940 configuration-pairs) in 933.7 s "
                                    "(results/demo_timing.json, fp32_avx2; its bf16 step on the AMX Xeon gives 23.9, "
                                    "the bf16 basis's method agrees); a run's own evaluations at session 13's 2.7 "
                                    "pairs/s, not measured since (benchmarks/train_speed.py gave 248 tokens/s on a "
                                    "faster AVX2 CPU, docs/speed.md, 2026-12-01)", eval_pairs_s=2.7),
}

#: a model's own training rate on the CPU, where it is measured, in place of SmolLM2-135M's scaled by FLOPs (a model
#: of about the same body is not as fast per FLOP: Gemma 3's 256-wide heads, GELU-tanh and extra norms): (precision,
#: model-name hint) -> (real training tokens/s, where it was measured). Its ablation scoring stays SmolLM2's, scaled
#: (its run's own evaluations: CPU_MODEL_EVAL).
CPU_MODEL_TRAIN: dict[tuple[str, str], tuple[float, str]] = {
    ("bf16", "gemma3-270m"): (498.7, "Gemma 3 270M's reference run (configs/train_msmarco12k_cpu_gemma.yaml) on the "
                                     "2-core AMX Xeon in bf16, 2 threads, nothing beside it: steps 3101-4400 of its "
                                     "session-28 call (results/resume/msmarco12k-gemma/train_log.jsonl)"),
    ("fp32", "gemma3-270m"): (237.2, "Gemma 3 270M's reference run on a 2-core AVX2 AMD EPYC (Zen 3) in fp32, 2 "
                                     "threads, tcmalloc, nothing beside it: steps 5002-5200 of its session-29 call "
                                     "(results/resume/msmarco12k-gemma/train_log.jsonl)"),
}

#: a model's own evaluation rate on the CPU, where it is measured, in place of SmolLM2-135M's scaled: (precision,
#: model-name hint) -> (reranked pairs/s of its training run's own evaluations, LoRA merged, where it was measured)
CPU_MODEL_EVAL: dict[tuple[str, str], tuple[float, str]] = {
    ("fp32", "gemma3-270m"): (5.75, "Gemma 3 270M's reference run's dev curve on a 2-core AVX2 AMD EPYC (Zen 3) "
                                    "in fp32, LoRA merged, 2 threads, tcmalloc, nothing beside it: the mean of its "
                                    "curve rows' pairs/s (7 checkpoints x DL19 and DL20, BM25 top-20; scoring time, "
                                    "model load apart: results/train_msmarco12k_gemma.json)"),
}

#: measured training throughput (real tokens/s) of a model on a GPU: (device, model-name hint) ->
#: (tokens/s, where it was measured). Scoring is not measured for these: it is assumed to run at the same
#: effective FLOP/s as training (a scored token costs 2N FLOPs against 4N for a LoRA training token).
MEASURED: dict[tuple[str, str], tuple[float, str]] = {
    ("cuda", "smollm2-135m"): (6096.0, "real SmolLM2-135M `lorank train` on DL20 on an H200, 6,096 tokens/s "
                                       "(2.2 s/step; benchmarks/README.md, issue 13's starting point, before its "
                                       "speed-ups)"),
}
#: below this many body parameters a model is "small": nominal GPU rates do not apply to it
SMALL_MODEL = 1_000_000_000


@dataclass(frozen=True)
class Rates:
    train: float  # effective FLOP/s of training (4N FLOPs per token)
    score: float  # effective FLOP/s of scoring (2N FLOPs per token): ablations, analyses
    note: str | None = None  # the basis, when it is not the nominal rate
    cpu: bool = False  # measured on the CPU, with the packed training forward (what HF_FORWARD_SLOWDOWN is against)
    evaluate: float | None = None  # effective FLOP/s of a training run's own evaluations; None: ``score``

    @property
    def eval_rate(self) -> float:
        return self.evaluate or self.score


#: how much slower a training step is on the CPU when it runs on PEFT's forward instead of the packed one, measured
#: against the packed plain LoRA in one run of benchmarks/train_speed.py on the 2-core AMX CPU
#: (results/train_speed_variants.json, ``variants.slowdown_vs_packed``; tests/study/test_train_price.py holds the two
#: equal): a plain LoRA with ``forward: hf``, DyLoRA and AdaLoRA (both always train on PEFT's forward)
HF_FORWARD_SLOWDOWN = {"hf": 1.77, "dylora": 1.76, "adalora": 2.19}


def forward_slowdown(tc: dict[str, Any], rates: Rates) -> float:
    """The factor on a CPU run's training time when it cannot use the packed forward (1 on a GPU, where the rates
    are not the packed forward's)."""
    if not rates.cpu:
        return 1.0
    variant = (tc.get("lora") or {}).get("variant") or "lora"
    if variant in ("dylora", "adalora"):
        return HF_FORWARD_SLOWDOWN[variant]
    return HF_FORWARD_SLOWDOWN["hf"] if tc.get("forward") == "hf" else 1.0


def cpu_flops(precision: str) -> tuple[float, float, float]:
    """(training, scoring, a run's own evaluations) effective FLOP/s of the CPU measured in `precision` (bf16 or
    fp32)."""
    m = CPU_MEASURED["bf16" if precision == "bf16" else "fp32"]
    per_pair = AVG_TOKENS * 2 * CPU_REF_PARAMS
    return (m.train_tokens_s * 4 * CPU_REF_PARAMS, m.score_pairs_s * per_pair,
            (m.eval_pairs_s or m.score_pairs_s) * per_pair)


def cpu_precision(dtype: str | None) -> tuple[str, str]:
    """(bf16 | fp32, why) for a training config's `dtype` on this CPU (`auto`: lorank.precision's decision)."""
    if dtype in (None, "auto"):
        d = decide(None, "cpu")
        return d.name, d.reason
    return ("bf16" if dtype == "bf16" else "fp32"), f"dtype: {dtype}"


def _model_measured(table: dict[tuple[str, str], tuple[float, str]], prec: str,
                    model: str) -> tuple[float, str] | None:
    """A model's own measured CPU rate in `prec` from `table` (CPU_MODEL_TRAIN, CPU_MODEL_EVAL), or None."""
    return next((v for (p, hint), v in table.items() if p == prec and hint in model.lower()), None)


def model_rates(device: str, model: str, n_params: int | None, nominal: tuple[float, float],
                precision: str | None = None, why: str = "") -> Rates:
    """The rates a plan uses for `model` (`n_params` body parameters) on `device`; on a CPU, those measured in
    `precision` (default fp32), with a note naming them."""
    if device == "cpu":
        prec = "bf16" if precision == "bf16" else "fp32"
        m = CPU_MEASURED[prec]
        scale = f", scaled by body parameters ({n_params / 1e6:.0f}M)" if n_params and abs(
            n_params - CPU_REF_PARAMS) > 0.05 * CPU_REF_PARAMS else ""
        other = "LORANK_BF16=0 prices it for an AVX2-only CPU (fp32)" if prec == "bf16" else \
            "LORANK_BF16=1 prices it for an AVX512-BF16 CPU (bf16)"
        train, score, evaluate = cpu_flops(prec)
        evals = f", {m.eval_pairs_s:g} pairs/s in a run's own evaluations" if m.eval_pairs_s else ""
        own, own_eval = _model_measured(CPU_MODEL_TRAIN, prec, model), _model_measured(CPU_MODEL_EVAL, prec, model)
        basis = (f"the measured {m.train_tokens_s:.0f} training tokens/s, {m.score_pairs_s:g} scored pairs/s in "
                 f"ablations{evals} of SmolLM2-135M{scale} ({m.source})")
        if own and n_params:
            train = own[0] * 4 * n_params
            basis = (f"training at its own measured {own[0]:.0f} tokens/s ({own[1]}); scoring at {m.score_pairs_s:g} "
                     f"pairs/s in ablations{evals} of SmolLM2-135M{scale} ({m.source})")
        if own_eval and n_params:
            evaluate = own_eval[0] * AVG_TOKENS * 2 * n_params
            basis += f"; its own evaluations at its measured {own_eval[0]:g} pairs/s ({own_eval[1]})"
        return Rates(train, score, note=(f"{model} on cpu in {prec}" + (f" ({why})" if why else "") + ": "
                                         + basis + "; " + other), cpu=True, evaluate=evaluate)
    if device != "cuda" or not n_params or n_params >= SMALL_MODEL:
        return Rates(*nominal)
    low = model.lower()
    for (dev, hint), (tokens_s, source) in MEASURED.items():
        if dev == device and hint in low:
            flops = tokens_s * 4 * n_params
            return Rates(flops, flops, f"{model} on cuda: training at the measured {tokens_s:,.0f} tokens/s ({source}); "
                                       "scoring not measured on a GPU, assumed at the same effective FLOP/s (a "
                                       "forward per token); issue 13's unmeasured speed-ups would make it faster")
    return Rates(*nominal, note=(f"{model} on cuda: no measured GPU rate for a model of {n_params / 1e6:.0f}M "
                                 "parameters; the estimate uses nominal 7B-class rates (40%/30% of an H100's bf16 "
                                 "peak), which a small model does not reach: it is a lower bound, likely by 10-100x"))


# ----------------------------------------------------------------------------------------- seconds per step
def score_s(pairs: float, n: int, rates: Rates, in_training: bool = False) -> float:
    """Seconds to score `pairs` (query, passage) pairs with a model of `n` body parameters: in an ablation or an
    analysis, or (``in_training``) in a training run's own evaluations."""
    return pairs * AVG_TOKENS * 2 * n / (rates.eval_rate if in_training else rates.score)


def set_queries(name: str, max_queries: int | None) -> int:
    n = SET_QUERIES.get(str(name).strip().lower(), 43)
    return min(n, max_queries) if max_queries else n


#: seconds a training run costs beyond its parts (process start, model load), folded into its checkpoint evaluations
START_S = 15


def train_tokens(tc: dict[str, Any]) -> float:
    """A run's training tokens at the cost basis's tokens a pair (``max_steps``, else a nominal 200 steps)."""
    n_steps = tc["max_steps"] if tc["max_steps"] > 0 else 200
    return n_steps * tc["batch_queries"] * tc["group_size"] * tc["grad_accum"] * AVG_TOKENS


def training_s(tc: dict[str, Any], n: int, rates: Rates) -> float:
    """A run's training alone: its tokens at the training rate (slower on the CPU off the packed forward:
    :func:`forward_slowdown`)."""
    return train_tokens(tc) * 4 * n / rates.train * forward_slowdown(tc, rates)


def checkpoint_evals_s(tc: dict[str, Any], n: int, rates: Rates) -> float:
    """Every saved checkpoint's evaluation on ``eval.sets``, plus the run's start (:data:`START_S`)."""
    n_steps = tc["max_steps"] if tc["max_steps"] > 0 else 200
    ev = tc.get("eval", {})
    ck = tc["checkpoints"]
    n_ckpt = len(ck.get("steps") or []) or max(1, n_steps // (ck.get("every") or n_steps))
    pairs = sum(set_queries(s, ev.get("max_queries")) for s in ev.get("sets", [])) * ev.get("depth", 100)
    return n_ckpt * score_s(pairs, n, rates, in_training=True) + START_S


def train_estimate(tc: dict[str, Any], n: int, rates: Rates) -> float:
    """A training run: its training, every checkpoint's evaluation, its curve and its test scorings."""
    return (training_s(tc, n, rates) + checkpoint_evals_s(tc, n, rates) + curve_estimate(tc, n, rates)
            + test_estimate(tc, n, rates))


def test_estimate(tc: dict[str, Any], n: int, rates: Rates) -> float:
    """A run's test-set scoring once training has finished (``eval.test_sets`` on the final checkpoint, or on each
    step of ``eval.test_steps``)."""
    ev = tc.get("eval", {})
    if not ev.get("test_sets"):
        return 0.0
    steps = ev.get("test_steps", "final")
    n_scored = 1 if steps == "final" else len(set(steps))
    pairs = sum(set_queries(s, ev.get("max_queries")) for s in ev["test_sets"]) * ev.get("depth", 100)
    return n_scored * score_s(pairs, n, rates, in_training=True)


def curve_points(n_steps: int, every: int) -> int:
    """The curve evaluations of a run of `n_steps` (lorank.train.curve): every `every` steps and the last."""
    return len(set(range(every, n_steps + 1, every)) | {n_steps}) if n_steps > 0 else 0


def curve_estimate(tc: dict[str, Any], n: int, rates: Rates) -> float:
    """A run's curve evaluations (``eval.curve``): each scores its sets (``eval.sets`` when null) at its depth."""
    ev = tc.get("eval", {})
    curve = ev.get("curve")
    if not curve:
        return 0.0
    n_steps = tc["max_steps"] if tc["max_steps"] > 0 else 200
    sets = curve.get("sets") if curve.get("sets") is not None else ev.get("sets", [])
    pairs = sum(set_queries(s, ev.get("max_queries")) for s in sets) * curve.get("depth", 20)
    return curve_points(n_steps, curve.get("every", 100)) * score_s(pairs, n, rates, in_training=True)


def window_count(n_layers: int, window: int, target: Window = PAPER_WINDOW) -> int:
    """Windows of the layer-windows sweep (lorank.ablate.sweeps.build_sweep) on `n_layers` layers: width `window`,
    stride half of it, the last one flush with the top layer, plus the `target` window when it is not one of them."""
    return len(layer_windows(list(range(n_layers)), window, target=target))


def sweep_size(sweep: str, n_layers: int, window: int, axes: dict[str, Any], target: Window = PAPER_WINDOW) -> float:
    """Full-evaluation equivalents of one sweep: its configurations plus the two every sweep scores (full, LoRA
    off); cached layer sweeps cost about 0.55 of L + 2 evaluations (results/ablation_sweep_cost.json:
    0.537 of 32 on 30 layers). Unknown components or rank (an adapter not there yet) count as all 7 projections
    and rank 8."""
    comp = axes.get("components")
    n_proj = 4 if comp == "mha" else 3 if comp == "mlp" else 7
    rank = int(axes.get("rank") or 8)
    layer_sweep = 0.55 * (n_layers + 2)
    return 2 + {"components": 2, "projections": 2 * n_proj, "layers-leave-one-out": layer_sweep - 2,
                "layers-keep-one": layer_sweep - 2, "layer-windows": window_count(n_layers, window, target),
                "rank-truncation": max(0, (rank - 1).bit_length()),
                "rank-prefix": max(0, (rank - 1).bit_length()), "scale": 6}.get(sweep, 0)


def ablation_estimate(configs: float, eval_set: str, max_queries: int | None, depth: int, n: int,
                      rates: Rates) -> float:
    return configs * score_s(set_queries(eval_set, max_queries) * depth, n, rates) + 15


def analysis_estimate(kind: str, options: dict[str, Any], n: int, n_layers: int, rates: Rates) -> float:
    """weights / compare: seconds of file work; probe: a base and a fine-tuned pass over its pairs (default 20
    queries x top-30); patch: both passes, then each layer's patch replays the layers above it (about L/2 full
    forwards per site kind) plus one all-blocks check, over its pairs (default 15 queries x top-20)."""
    if kind in ("weights", "compare"):
        return 10.0
    if kind == "probe":
        pairs = (options.get("max_queries") or 20) * options.get("depth", 30)
        return score_s(2 * pairs, n, rates) + 20
    if kind == "patch":
        pairs = (options.get("max_queries") or 15) * options.get("depth", 20)
        sites = options.get("sites") or ["layer"]
        passes = 3 + math.ceil(len(sites) * n_layers / 2)
        return score_s(passes * pairs, n, rates) + 20
    return score_s(2 * 600, n, rates) + 20
