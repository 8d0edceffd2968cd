"""A run built by several ``lorank train`` calls (resumes) is timed over all of them
(:func:`lorank.layout.run.training_calls`, used by benchmarks/train_msmarco12k.py and a study's time table); the
standalone mine command of lorank.after_training names the window the run mined with."""
import json

from lorank.after_training import mine_window
from lorank.layout.run import training_calls


def test_training_calls_split_where_elapsed_restarts(tmp_path):
    # call 1 trains steps 1-3 (cumulative tokens 100, 200, 300 over 30 s) and is interrupted after a checkpoint at 2;
    # call 2 resumes from step 2's restored count (200) and trains steps 3-4 in 25 s; call 3 trains step 5 in 5 s.
    rows = [(1, 100, 10.0), (2, 200, 20.0), (3, 300, 30.0),
            (3, 310, 12.0), (4, 420, 25.0),
            (5, 470, 5.0)]
    (tmp_path / "train_log.jsonl").write_text("".join(
        json.dumps({"step": s, "tokens": t, "elapsed_s": e}) + "\n" for s, t, e in rows))
    calls = training_calls(tmp_path)
    assert [c["steps"] for c in calls] == ["1-3", "3-4", "5-5"]
    assert [c["s"] for c in calls] == [30.0, 25.0, 5.0]
    assert [c["tokens"] for c in calls] == [300, 220, 50]  # call 2 restarted from step 2's count and redid step 3
    assert calls[1]["tokens_per_s"] == 8.8


def test_training_calls_of_an_uninterrupted_run_sum_to_its_tokens(tmp_path):
    rows = [(1, 100, 10.0), (2, 200, 20.0), (3, 330, 30.0)]
    (tmp_path / "train_log.jsonl").write_text("".join(
        json.dumps({"step": s, "tokens": t, "elapsed_s": e}) + "\n" for s, t, e in rows)
        + json.dumps({"step": 3, "train_runtime": 30.5, "tokens": 330, "elapsed_s": 30.5}) + "\n")  # the final summary row
    (call,) = training_calls(tmp_path)
    assert call == {"steps": "1-3", "s": 30.5, "tokens": 330, "tokens_per_s": 10.8}


def test_training_calls_take_what_each_call_recorded_when_it_started(tmp_path):
    # call 1 (bf16) trained 1-3 with a checkpoint at 2; call 2 (fp32) started at 3 and was stopped before its first
    # log row was kept; call 3 (fp32, another CPU) started at 3 again and trained 3-4; the log knows calls 1 and 3
    rows = [(1, 100, 10.0), (2, 200, 20.0), (3, 300, 30.0), (3, 310, 12.0), (4, 420, 25.0)]
    (tmp_path / "train_log.jsonl").write_text("".join(
        json.dumps({"step": s, "tokens": t, "elapsed_s": e}) + "\n" for s, t, e in rows))
    recorded = [{"from_step": 1, "dtype": "bf16", "cpu": "Xeon"}, {"from_step": 3, "dtype": "fp32", "cpu": "EPYC A"},
                {"from_step": 3, "dtype": "fp32", "cpu": "EPYC B"}]
    (tmp_path / "train_calls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recorded))
    calls = training_calls(tmp_path)
    assert [(c["steps"], c["dtype"], c["cpu"]) for c in calls] == [("1-3", "bf16", "Xeon"), ("3-4", "fp32", "EPYC B")]
    (tmp_path / "train_calls.jsonl").unlink()  # a run trained before lorank wrote the file: the log's facts only
    assert all("dtype" not in c for c in training_calls(tmp_path))


def test_training_calls_pair_rows_with_calls_that_log_every_n_steps(tmp_path):
    # log_every 10 (the CUDA default): call 1 (from step 1) logs 10, 20; call 2 resumes checkpoint-20 (from 21) and
    # logs 30, 40; call 3 (from 41) has no row (trained by older code): it must not take call 2's
    rows = [(10, 100, 10.0), (20, 200, 20.0), (30, 300, 5.0), (40, 400, 10.0), (50, 500, 4.0)]
    (tmp_path / "train_log.jsonl").write_text("".join(
        json.dumps({"step": s, "tokens": t, "elapsed_s": e}) + "\n" for s, t, e in rows))
    recorded = [{"from_step": 1, "dtype": "bf16"}, {"from_step": 21, "dtype": "fp32"}]
    (tmp_path / "train_calls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recorded))
    calls = training_calls(tmp_path)
    assert [(c["steps"], c.get("dtype")) for c in calls] == [("10-20", "bf16"), ("30-40", "fp32"), ("50-50", None)]


def test_a_call_whose_steps_were_trained_again_no_longer_counts(tmp_path):
    from lorank.layout.run import trained_precisions

    # an fp32 call from step 101 stopped before its first checkpoint; the run went on from step 101 again in bf16
    recorded = [{"from_step": 1, "dtype": "bf16"}, {"from_step": 101, "dtype": "fp32"},
                {"from_step": 101, "dtype": "bf16"}]
    (tmp_path / "train_calls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recorded))
    assert trained_precisions(tmp_path) == (["bf16"], "train_calls.jsonl")
    # a resume from an older checkpoint (step 51) retrains the fp32 call's steps from there
    recorded = [{"from_step": 1, "dtype": "bf16"}, {"from_step": 101, "dtype": "fp32"},
                {"from_step": 51, "dtype": "bf16"}]
    (tmp_path / "train_calls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recorded))
    assert trained_precisions(tmp_path)[0] == ["bf16"]
    recorded.append({"from_step": 201, "dtype": "fp32"})
    (tmp_path / "train_calls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recorded))
    assert trained_precisions(tmp_path)[0] == ["bf16", "fp32"]


def test_mine_command_names_the_window_the_run_mined_with():
    assert mine_window([{"kind": "trec", "path": "dl20"}, {"kind": "msmarco", "mine": {"window": "1-30"}}]) == "1-30"
    assert mine_window([{"kind": "msmarco", "mine": {"window": "10-100"}}]) == "10-100"
    assert mine_window([{"kind": "msmarco", "negatives": "mined.jsonl"}]) == "10-100"
