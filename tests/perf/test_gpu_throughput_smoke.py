"""benchmarks/gpu_throughput.py smoke mode: runs on CPU with a tiny model, writes a sane JSON."""
import json

from tests.benchmark_module import load_benchmark


def test_gpu_throughput_smoke_mode_on_cpu(tmp_path):
    mod = load_benchmark("gpu_throughput")
    out = tmp_path / "smoke.json"
    rc = mod.main(["--device", "cpu", "--shape", "tiny-llama", "--steps", "1", "--warmup", "1", "--score-pairs", "16",
                   "--shape-buckets", "--out", str(out), "--tmp", str(tmp_path / "t")])
    assert rc == 0
    res = json.loads(out.read_text())
    row, base = res["rows"]  # lorank and the Tevatron-style baseline, same shape, same sequences
    assert row["config"] == "lorank" and base["config"] == "baseline"
    for r in (row, base):
        assert r["shape"] == "tiny-llama" and r["attention"] == "sdpa" and r["lora_params"] > 0
        assert r["command"].startswith("python benchmarks/gpu_throughput.py") and "attention_backend" in r
        tr, sc = r["train"], r["score"]
        assert tr["steps_measured"] == 1 and tr["tokens_per_s"] > 0 and 0 < tr["mfu"] <= tr["hfu"] < 1.5
        assert sc["pairs"] == 16 and sc["finite"] and sc["pairs_per_s"] > 0
    assert row["shape_buckets"] is True and row["train"]["distinct_chunk_shapes"] >= 1
    assert base["train"]["padding"] == "max_length 196" and base["train"]["checkpointing"] == "full"
    assert [t["config"] for t in res["table"]] == ["lorank", "baseline"]
    assert all(t["train.mfu"] and t["score.mfu"] for t in res["table"])


def test_unknown_config_is_refused(tmp_path):
    mod = load_benchmark("gpu_throughput")
    assert mod.main(["--device", "cpu", "--shape", "tiny-llama", "--configs", "tevatron2",
                     "--out", str(tmp_path / "x.json")]) == 2


def test_flop_model():
    mod = load_benchmark("gpu_throughput")
    # frozen base: training = 2x the forward's linear FLOPs, 3x its attention FLOPs, plus LoRA's 6N
    fwd = mod.flops_per_token(1000, 10, 2, 8, 4.0, train=False)
    trn = mod.flops_per_token(1000, 10, 2, 8, 4.0, train=True)
    assert fwd == 2 * 1000 + 2 * 2 * 8 * 4.0 + 20
    assert trn == 4 * 1000 + 6 * 2 * 8 * 4.0 + 60
    lens = mod.synthetic_lengths(500, 0)
    assert max(lens) <= 196 and 80 < sum(lens) / len(lens) < 120
