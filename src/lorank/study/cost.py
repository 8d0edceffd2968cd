"""The basis of a study's cost estimate for one model on one device: effective FLOP/s for training and scoring,
and a note that says where they come from.

The nominal rates (`lorank.study.plan.RATES`) are FLOP/s: the CPU pair is calibrated on the demo study measured on
the 2-core development machine with SmolLM2-135M; the CUDA pair is a fraction of the H100's dense bf16 peak, which
7B-class models approach (measured: scoring 30-34% MFU, training 7-10%). A 135M model is nowhere near a GPU's peak
(kernel launches and small matmuls dominate), so on CUDA a small model uses a measured throughput where one exists
(`MEASURED`) and otherwise says plainly that its estimate is a lower bound.
"""
from __future__ import annotations

from dataclasses import dataclass

#: measured training throughput (real tokens/s) of a model on a device: (device, model-name hint) ->
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
    score: float  # effective FLOP/s of scoring (2N FLOPs per token)
    note: str | None = None  # the basis, when it is not the nominal rate


def model_rates(device: str, model: str, n_params: int | None, nominal: tuple[float, float]) -> Rates:
    """The rates a plan uses for `model` (`n_params` body parameters) on `device`."""
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
