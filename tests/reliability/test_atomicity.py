"""Point 2 of issue 8: no partial file is ever taken as complete.

Every result file lorank writes (eval JSON, TREC runs, metrics, checkpoint markers, reports) goes through
``lorank.atomic`` (temp file + fsync + rename); a fault injected at any byte of the write leaves the old
file (or none), never a prefix. HF's ``checkpoint-N/`` folders are written in place, so lorank marks a
checkpoint complete only once every file is fsynced and their sizes are recorded; a half-written one is
ignored with a warning by the resume logic and by ``latest_checkpoint``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lorank import atomic
from lorank.atomic import Fault, InjectedFault, inject_fault
from lorank.errors import ConfigError
from lorank.layout.checkpoints import read_marker
from tests.reliability.conftest import adapter_tensors, assert_bit_identical, subprocess_env, train_here, write_config

SRC = Path(__file__).resolve().parents[2] / "src" / "lorank"


# ------------------------------------------------------------------------------------------------ hook
def test_fault_spec_parsing():
    assert Fault.parse("metrics.jsonl:10") == Fault("metrics.jsonl", 10, "raise")
    assert Fault.parse("a:b.json:0:kill") == Fault("a:b.json", 0, "kill")
    assert Fault.parse("x.run:end:enospc") == Fault("x.run", None, "enospc")
    for bad in ("nocolon", ":5", "x:y", "x:-1"):
        with pytest.raises(ValueError):
            Fault.parse(bad)


def _writers():
    """Every kind of lorank result file, written through its real writer."""
    from lorank.evaluation import write_run
    from lorank.layout.run import append_metrics

    run = {f"q{q}": {f"d{d}": float(d) for d in range(40)} for q in range(5)}
    blob = bytes(range(256)) * 20
    return {
        "eval JSON": ("eval.json", lambda p: atomic.atomic_write_json(p, {"ndcg": [0.5] * 200})),
        "TREC run": ("x.run", lambda p: write_run(p, run, tag="t")),
        "metrics": ("metrics.jsonl", lambda p: append_metrics(p.parent, {"step": 9, "eval_set": "s", "m": 0.1})),
        "report": ("report.md", lambda p: atomic.atomic_write_text(p, "# report\n" + "row | 1\n" * 300)),
        "bytes (png, parquet)": ("fig.png", lambda p: atomic.atomic_write_bytes(p, blob)),
    }


@pytest.mark.parametrize("kind", list(_writers()))
@pytest.mark.parametrize("action", ["raise", "enospc"])
def test_a_fault_at_any_byte_leaves_the_old_file(tmp_path, kind, action):
    name, write = _writers()[kind]
    target = tmp_path / name
    write(target)  # the complete "old" version
    old = target.read_bytes()
    size = len(old)
    offsets = sorted({0, 1, 7, size // 3, size // 2, size - 1})
    for n in [*offsets, None]:
        with inject_fault(name, n, action), pytest.raises(OSError) as e:
            write(target)
        if action == "enospc":
            assert e.value.errno == 28
        else:
            assert isinstance(e.value, InjectedFault)
        assert target.read_bytes() == old, f"{kind}: fault after {n} bytes changed the file"
        assert not list(tmp_path.glob(".*.tmp")), "the temp file was not cleaned up"
    # no fault: the write goes through
    write(target)
    assert target.read_bytes() == old


def test_an_atomic_write_gets_the_mode_a_plain_write_would(tmp_path):
    # mkstemp's 0600 once left every report and result readable only by its writer
    old = os.umask(0o022)
    try:
        atomic.atomic_write_text(tmp_path / "new.json", "{}")
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
        (tmp_path / "shared.json").write_text("{}")
        os.chmod(tmp_path / "shared.json", 0o664)
        atomic.atomic_write_bytes(tmp_path / "shared.json", b"[]")
        assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o664
        assert (tmp_path / "shared.json").read_bytes() == b"[]"
    finally:
        os.umask(old)


@pytest.mark.parametrize("after", [0, 1, 4096, 60_000, "end"])
def test_kill_mid_write_never_leaves_a_partial_file_under_the_final_name(tmp_path, after):
    """SIGKILL during an atomic write (a real process death): the final name holds the old content; the
    half-written temp file is left behind under a dot-name that no reader looks at."""
    target = tmp_path / "run.trec"
    target.write_text("old complete content\n")
    code = ("from lorank.atomic import atomic_open\n"
            f"with atomic_open({str(target)!r}) as fh:\n"
            "    for i in range(20000): fh.write(f'q{i} Q0 d{i} 1 0.5 t\\n')\n")
    env = dict(subprocess_env(), LORANK_FAULT_INJECT=f"run.trec:{after}:kill")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    assert target.read_text() == "old complete content\n"
    leftovers = list(tmp_path.glob(".run.trec.*.tmp"))
    assert len(leftovers) == 1
    if after != "end":
        assert leftovers[0].stat().st_size == after  # exactly the bytes written before the kill
    from lorank.data import load_run

    with pytest.raises(Exception):
        load_run(tmp_path / "missing.run")  # nothing else appeared under a final name
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["run.trec"]


def test_log_line_cut_by_a_crash_is_dropped(tmp_path):
    log = tmp_path / "train_log.jsonl"
    atomic.append_line(log, json.dumps({"step": 1, "loss": 1.0}))
    with inject_fault("train_log", 9), pytest.raises(InjectedFault):
        atomic.append_line(log, json.dumps({"step": 2, "loss": 0.5}))
    rows, bad = atomic.read_jsonl(log)
    assert rows == [{"step": 1, "loss": 1.0}] and bad == 1


def test_resumed_run_rewrites_its_log_without_the_cut_line_and_the_redone_steps(run_copy):
    from lorank.train.callbacks import JsonlLog

    log = run_copy / "train_log.jsonl"
    rows, _ = atomic.read_jsonl(log)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    with open(log, "a") as fh:
        fh.write('{"step": 5, "lo')  # cut by a crash

    class S:
        is_world_process_zero = True
        global_step = 2

    class T:
        tokens_seen = 0

    JsonlLog(log, lambda: T()).on_train_begin(None, S(), None)
    rows, bad = atomic.read_jsonl(log)
    assert bad == 0 and [r["step"] for r in rows] == [1, 2]  # the redone steps go; a resumed run logs them again


# ------------------------------------------------------------------------------ the one JSONL reader
def test_read_jsonl_skips_a_torn_last_line_with_a_warning_naming_file_and_line(tmp_path, caplog):
    log = tmp_path / "train_log.jsonl"
    log.write_bytes(b'{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')
    with caplog.at_level(logging.WARNING, logger="lorank.atomic"):
        assert atomic.read_jsonl(log) == ([{"step": 1}, {"step": 2}], 1)
    [msg] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert msg.startswith(f"{log}:4: skipped 1 torn last line (an interrupted append): not valid JSON (")
    # cut inside a multi-byte character, then trailing blank lines: still only the torn last line
    log.write_bytes(b'{"q": "caf\xc3\xa9"}\n{"q": "caf\xc3\n\n')
    assert atomic.read_jsonl(log) == ([{"q": "caf\u00e9"}], 1)


def test_read_jsonl_refuses_a_torn_last_line_when_told_to(tmp_path):
    from lorank.errors import DataError

    log = tmp_path / "m.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "lo')
    with pytest.raises(DataError, match="torn last line, and this reader allows none") as e:
        atomic.read_jsonl(log, allow_torn_last_line=False)
    assert (e.value.path, e.value.line) == (str(log), 2)


@pytest.mark.parametrize("bad", [b"not json", b'{"step": 2', b'{"q": "\xff"}'], ids=["text", "cut", "bad utf-8"])
def test_read_jsonl_raises_data_error_with_file_and_line_for_a_bad_line_before_the_last(tmp_path, bad, caplog):
    from lorank.errors import DataError

    log = tmp_path / "m.jsonl"
    log.write_bytes(b'{"step": 1}\n' + bad + b'\n{"step": 3}\n')
    with pytest.raises(DataError) as e:
        atomic.read_jsonl(log, missing_ok=True)
    assert (e.value.path, e.value.line) == (str(log), 2)
    assert str(e.value).startswith(f"{log}:2: not valid ")
    assert "the file is damaged, not cut by a crash" in str(e.value)
    assert not caplog.records  # an error, not a warning


def test_read_jsonl_missing_file_per_option(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic.read_jsonl(tmp_path / "absent.jsonl")
    assert atomic.read_jsonl(tmp_path / "absent.jsonl", missing_ok=True) == ([], 0)


def test_read_jsonl_reads_valid_rows_unchanged(tmp_path, caplog):
    rows = [{"step": 1, "s": "a\u2028b\u0085c"}, [1, 2], "x", 3.5, None, {"step": 2}]
    log = tmp_path / "m.jsonl"
    log.write_bytes(("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n\n  \n").encode())
    assert atomic.read_jsonl(log) == (rows, 0)
    assert not caplog.records


def test_metrics_readers_share_the_policy(tmp_path, caplog):
    """read_metrics (and append_metrics, which rewrites the file) no longer drop a damaged line quietly."""
    from lorank.errors import DataError
    from lorank.layout.run import append_metrics, read_metrics

    assert read_metrics(tmp_path / "none") == []
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1, "eval_set": "a"}\n{"step": 2, "eval_set": "a", "nd')
    with caplog.at_level(logging.WARNING, logger="lorank.atomic"):
        assert read_metrics(tmp_path) == [{"step": 1, "eval_set": "a"}]
    assert f"{f}:2: skipped 1 torn last line" in caplog.text
    damaged = '{"step": 1, "eval_set": "a"}\ngarbage\n{"step": 3, "eval_set": "a"}\n'
    f.write_text(damaged)
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: not valid JSON"):
        read_metrics(tmp_path)
    with pytest.raises(DataError):
        append_metrics(tmp_path, {"step": 4, "eval_set": "a"})
    assert f.read_text() == damaged  # not rewritten without the bad line


def test_resumed_log_with_a_damaged_middle_line_is_refused_not_rewritten(tmp_path):
    from lorank.errors import DataError
    from lorank.train.callbacks import JsonlLog

    log = tmp_path / "train_log.jsonl"
    damaged = '{"step": 1}\n{"step": 2, "lo{"step": 3}\n{"step": 4}\n'
    log.write_text(damaged)

    class S:
        is_world_process_zero = True
        global_step = 4

    class T:
        tokens_seen = 0

    with pytest.raises(DataError, match=r"train_log\.jsonl:2: "):
        JsonlLog(log, lambda: T()).on_train_begin(None, S(), None)
    assert log.read_text() == damaged


# --------------------------------------------------------------------------- half-written checkpoints
def _break(ckpt: Path, how: str) -> None:
    st = ckpt / "adapter_model.safetensors"
    marker = ckpt / "lorank_checkpoint.json"
    if how == "no marker":
        marker.unlink()
    elif how == "marker temp file only":  # killed while writing the marker
        marker.rename(ckpt / ".lorank_checkpoint.json.abc123.tmp")
    elif how == "corrupt marker":
        marker.write_text('{"step": 4, "fi')
    elif how == "truncated safetensors, old marker":  # a marker without file sizes (older lorank)
        meta = json.loads(marker.read_text())
        meta.pop("files")
        marker.write_text(json.dumps(meta))
        st.write_bytes(st.read_bytes()[:-100])
    elif how.startswith("truncated safetensors"):
        data = st.read_bytes()
        cut = {"0": 0, "7": 7, "header": 8 + len(data) // 20, "last byte": len(data) - 1}[how.split(":")[1]]
        st.write_bytes(data[:cut])
    elif how == "truncated optimizer":
        f = ckpt / "optimizer.pt"
        f.write_bytes(f.read_bytes()[:100])
    elif how == "missing scheduler":
        (ckpt / "scheduler.pt").unlink()
    elif how == "no adapter":
        st.unlink()
    else:
        raise AssertionError(how)


BREAKS = ["no marker", "marker temp file only", "corrupt marker", "truncated safetensors:0",
          "truncated safetensors:7", "truncated safetensors:header", "truncated safetensors:last byte",
          "truncated safetensors, old marker", "truncated optimizer", "missing scheduler", "no adapter"]


@pytest.mark.parametrize("how", BREAKS)
def test_half_written_checkpoint_is_ignored_with_a_warning(run_copy, how, caplog):
    from lorank.adapters import read_adapter_state
    from lorank.layout.checkpoints import latest_checkpoint
    from lorank.layout.checkpoints import checkpoint_problem, complete_checkpoints

    assert [c.name for c in complete_checkpoints(run_copy)] == ["checkpoint-2", "checkpoint-4"]
    _break(run_copy / "checkpoint-4", how)
    assert checkpoint_problem(run_copy / "checkpoint-4") is not None
    with caplog.at_level(logging.WARNING, logger="lorank.train"):
        assert [c.name for c in complete_checkpoints(run_copy)] == ["checkpoint-2"]
    assert any("ignoring incomplete checkpoint" in r.getMessage() and "checkpoint-4" in r.getMessage()
               for r in caplog.records)
    assert latest_checkpoint(run_copy).name == "checkpoint-2"
    # named directly, the broken checkpoint is refused with a clear error, not loaded
    if how != "no adapter":
        with pytest.raises(ConfigError, match="incomplete checkpoint|truncated|damaged"):
            latest_checkpoint(run_copy / "checkpoint-4")
    if how.startswith("truncated safetensors"):
        with pytest.raises(ConfigError):
            read_adapter_state(run_copy / "checkpoint-4")


def test_resume_skips_the_half_written_checkpoint_and_still_ends_bit_identical(trained_run, run_copy, caplog):
    _break(run_copy / "checkpoint-4", "truncated safetensors:header")
    cfg = write_config(run_copy.parent / "resume.yaml", {"model": _model_of(trained_run), "data": _data_of(trained_run)},
                       run_copy, max_steps=4, every=2, eval_sets=False)
    with caplog.at_level(logging.WARNING, logger="lorank.train"):
        res = train_here(cfg)
    assert any("ignoring incomplete checkpoint" in r.getMessage() for r in caplog.records)
    summary = json.loads((run_copy / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2")
    # the rate is this call's: the two steps it trained, not the run's total over this call's time
    first_half = read_marker(run_copy / "checkpoint-2")["counters"]["tokens_seen"]
    assert summary["steps_this_call"] == 2 and summary["tokens_this_call"] == summary["tokens"] - first_half > 0
    assert summary["tokens_per_s"] == pytest.approx(summary["tokens_this_call"] / summary["train_s"], rel=0.05)  # train_s is rounded
    assert res.steps == 4 and [c.name for c in res.checkpoints] == ["checkpoint-2", "checkpoint-4"]
    assert_bit_identical(adapter_tensors(trained_run / "checkpoint-4"), adapter_tensors(run_copy / "checkpoint-4"))


def _model_of(run: Path) -> Path:
    return Path(json.loads((run / "config.json").read_text())["config"]["model"])


def _data_of(run: Path) -> Path:
    return Path(json.loads((run / "config.json").read_text())["config"]["data"][0]["path"])


def test_marker_records_every_file_size_and_the_counters(trained_run):
    meta = json.loads((trained_run / "checkpoint-4" / "lorank_checkpoint.json").read_text())
    assert meta["step"] == 4 and meta["scheduled"] is True
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert meta["files"][name] == (trained_run / "checkpoint-4" / name).stat().st_size
    assert meta["counters"]["tokens_seen"] > 0


def test_fault_while_writing_the_marker_leaves_an_ignored_checkpoint(tiny, tmp_path):
    """The marker is the last write of a checkpoint: a fault there must not produce a complete-looking one."""
    from lorank.train.callbacks import SaveError
    from lorank.layout.checkpoints import complete_checkpoints

    cfg = write_config(tmp_path / "c.yaml", tiny, tmp_path / "run", max_steps=4, every=2, eval_sets=False)
    with inject_fault("checkpoint-4/lorank_checkpoint.json", 30), pytest.raises(SaveError, match="checkpoint-4"):
        train_here(cfg)
    assert [c.name for c in complete_checkpoints(tmp_path / "run")] == ["checkpoint-2"]
    assert not (tmp_path / "run" / "checkpoint-4").exists()  # discarded


# ------------------------------------------------------------------------------------ static guard
_RAW_WRITE = re.compile(r"\.write_text\(|\.write_bytes\(|(?<!atomic_)open\([^)]*[\"'][wax]b?[\"']|torch\.save\(|"
                        r"save_file\(|np\.save[a-z_]*\((?!\s*(fh|buf)\b)|\.to_(csv|parquet|json)\((?!\s*\)|\s*buf\b|\s*\w+=)|"
                        r"json\.dump\((?![^,]*,\s*(fh|buf)\b)")
_ALLOWED = {
    # written into a fresh temp folder that is renamed into place as a whole
    ("models/source.py", '(tmp / "lorank_source.txt").write_text'),
    ("export.py", 'save_file(state, str(weights_file(tmp))'),
    ("layout/snapshot.py", "(dest / COMPLETE_MARKER).write_text"),  # dest: inside the snapshot's temp folder
    ("layout/snapshot.py", "dest.write_bytes("),
    # a temp name, then os.replace
    ("ablate/resume.py", "np.savez(tmp,"),
    # a human-readable log of a study step's subprocess output (not a result; read only for its tail)
    ("study/executor.py", 'log.open("a"'),
}


def test_every_lorank_writer_is_atomic():
    """lorank writes result files only through lorank.atomic (or a temp name + rename); keep it so. Writing
    into a handle named ``fh``/``buf`` is allowed: those come from ``atomic_open`` / an in-memory buffer."""
    offenders = []
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC).as_posix()
        if rel == "atomic.py":
            continue
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if _RAW_WRITE.search(code) and not any(rel == a and s in code for a, s in _ALLOWED):
                offenders.append(f"{rel}:{i}: {line.strip()}")
            if "savefig(" in code and not re.search(r"savefig\((tmp|buf)", code):
                offenders.append(f"{rel}:{i}: savefig straight to the final name: {line.strip()}")
    assert not offenders, "non-atomic writes:\n" + "\n".join(offenders)


def test_fresh_start_in_a_used_folder_sets_the_old_run_aside(trained_run, run_copy):
    """--no-resume: the old run's checkpoints and results move to previous-*/ (nothing lost, nothing mixed)."""
    cfg = write_config(run_copy.parent / "fresh.yaml", {"model": _model_of(trained_run), "data": _data_of(trained_run)},
                       run_copy, max_steps=2, every=2, eval_sets=False)
    from lorank.train.config import TrainConfig
    from lorank.train.run import train
    from tests.reliability.conftest import one_thread

    with one_thread():
        res = train(TrainConfig.from_yaml(cfg), resume=False, progress=False)
    assert res.steps == 2 and [c.name for c in res.checkpoints] == ["checkpoint-2"]
    (prev,) = list(run_copy.glob("previous-*"))
    assert sorted(p.name for p in prev.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert_bit_identical(adapter_tensors(prev / "checkpoint-4"), adapter_tensors(trained_run / "checkpoint-4"))
    assert json.loads((run_copy / "train_summary.json").read_text())["resumed_from"] is None


def test_a_checkpoint_overwritten_in_place_is_incomplete_until_its_new_marker(run_copy, monkeypatch):
    """If a save lands in a folder that already holds a complete checkpoint, the old marker goes first: a crash
    mid-overwrite must not leave old-marker + half-new files looking complete (same sizes!)."""
    import transformers

    from lorank.layout.checkpoints import checkpoint_problem
    from lorank.train.trainer import RerankTrainer

    ck = run_copy / "checkpoint-4"
    seen = {}

    def fake_save(self, model, trial):
        seen["problem"] = checkpoint_problem(ck)  # what a crash at this moment would leave
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", fake_save)

    class Fake(RerankTrainer):
        def __init__(self):  # no model, no args: only what _save_checkpoint reads
            self.state = type("S", (), {"global_step": 4})()

        def _get_output_dir(self, trial=None):
            return str(run_copy)

    with pytest.raises(KeyboardInterrupt):
        Fake()._save_checkpoint(None, None)
    assert seen["problem"] and "no lorank_checkpoint.json" in seen["problem"]
