"""benchmarks/gpu_throughput.py smoke mode: runs on CPU with a tiny model, writes a sane JSON."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_throughput_smoke_mode_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_throughput", ROOT / "benchmarks" / "gpu_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "smoke.json"
    rc = mod.main(["--device", "cpu", "--shape", "tiny-llama", "--steps", "1", "--warmup", "1", "--score-pairs", "16",
                   "--out", str(out), "--tmp", str(tmp_path / "t")])
    assert rc == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert row["shape"] == "tiny-llama" and row["attention"] == "sdpa" and row["lora_params"] > 0
    tr, sc = row["train"], row["score"]
    assert tr["steps_measured"] == 1 and tr["tokens_per_s"] > 0 and 0 < tr["mfu"] <= tr["hfu"] < 1.5
    assert sc["pairs"] == 16 and sc["finite"] and sc["pairs_per_s"] > 0


def test_flop_model():
    spec = importlib.util.spec_from_file_location("gpu_throughput", ROOT / "benchmarks" / "gpu_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # frozen base: training = 2x the forward's linear FLOPs, 3x its attention FLOPs, plus LoRA's 6N
    fwd = mod.flops_per_token(1000, 10, 2, 8, 4.0, train=False)
    trn = mod.flops_per_token(1000, 10, 2, 8, 4.0, train=True)
    assert fwd == 2 * 1000 + 2 * 2 * 8 * 4.0 + 20
    assert trn == 4 * 1000 + 6 * 2 * 8 * 4.0 + 60
    lens = mod.synthetic_lengths(500, 0)
    assert max(lens) <= 196 and 80 < sum(lens) / len(lens) < 120
