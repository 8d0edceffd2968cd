"""Point 7 of issue 8: safe loading and a small attack surface.

- Adapters (LoRA + score head) load only from safetensors; a pickle file is refused unless allow_pickle /
  ``--allow-pickle`` (rerank, ablate), and even then it goes through ``torch.load(weights_only=True)``,
  which does not run the code a malicious pickle carries.
- trust_remote_code is off on every load path unless asked for.
- ``lorank.safety.safe_join``: a config path cannot make lorank write outside its root.
- lorank has no HTTP surface: nothing in the package binds a socket.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lorank.adapters import UnsafeFileError, adapter_file, read_adapter_state
from lorank.cli import app
from lorank.errors import ConfigError
from lorank.safety import is_inside, safe_join
from tests.reliability.conftest import one_thread

SRC = Path(__file__).resolve().parents[2] / "src" / "lorank"


class _Evil:
    """Unpickling this runs ``open(sentinel, 'w')``: the classic pickle code-execution payload."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _pickle_adapter(src: Path, dst: Path, evil_sentinel: Path | None = None) -> Path:
    """A copy of checkpoint ``src`` whose weights are a pickle (adapter_model.bin), optionally malicious."""
    shutil.copytree(src, dst)
    # a foreign adapter folder (not a lorank training checkpoint): its metadata, no completeness marker
    (dst / "lorank_checkpoint.json").rename(dst / "lorank_meta.json")
    st_path = dst / "adapter_model.safetensors"
    state = read_adapter_state(src)
    st_path.unlink()
    if evil_sentinel is None:
        torch.save(state, dst / "adapter_model.bin")
    else:
        with open(dst / "adapter_model.bin", "wb") as fh:
            pickle.dump({"weights": _Evil(str(evil_sentinel))}, fh)
    return dst


@pytest.fixture
def pickled(trained_run, tmp_path) -> Path:
    return _pickle_adapter(trained_run / "checkpoint-4", tmp_path / "pickled")


@pytest.fixture
def evil(trained_run, tmp_path) -> tuple[Path, Path]:
    sentinel = tmp_path / "PWNED"
    return _pickle_adapter(trained_run / "checkpoint-4", tmp_path / "evil", sentinel), sentinel


def test_pickle_adapter_is_refused_by_default(pickled):
    from lorank.reranker import Reranker

    with pytest.raises(UnsafeFileError, match="pickle.*allow-pickle"):
        adapter_file(pickled)
    with pytest.raises(UnsafeFileError):
        read_adapter_state(pickled)
    with pytest.raises(UnsafeFileError):
        Reranker.from_adapter(pickled)


def test_pickle_adapter_loads_when_allowed_and_scores_like_the_safetensors_one(pickled, trained_run):
    from lorank.reranker import Reranker

    with one_thread():
        a = Reranker.from_adapter(pickled, allow_pickle=True, dtype="fp32", bf16=False).score("flea cycle", ["flea", "car"])
        b = Reranker.from_adapter(trained_run / "checkpoint-4", dtype="fp32", bf16=False).score("flea cycle",
                                                                                                ["flea", "car"])
    assert (a == b).all()


def test_malicious_pickle_never_runs_code(evil):
    from lorank.reranker import Reranker

    ckpt, sentinel = evil
    with pytest.raises(UnsafeFileError):
        Reranker.from_adapter(ckpt)
    with pytest.raises(Exception):  # allowed, it still loads with weights_only=True: refused, not executed
        read_adapter_state(ckpt, allow_pickle=True)
    with pytest.raises(Exception):
        Reranker.from_adapter(ckpt, allow_pickle=True)
    assert not sentinel.exists()


@pytest.mark.parametrize("command", ["rerank", "ablate"])
def test_cli_refuses_pickle_without_the_flag(command, pickled, tiny, tmp_path):
    data = tiny["data"]
    args = {"rerank": ["rerank", "--adapter", str(pickled), "--eval", str(data), "--depth", "4",
                       "--out", str(tmp_path / "r.run")],
            "ablate": ["ablate", "--adapter", str(pickled), "--eval", str(data), "--depth", "4",
                       "--sweep", "scale", "--out", str(tmp_path / "abl")]}[command]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "pickle" in res.output and "--allow-pickle" in res.output.replace("\n", "")
    with one_thread():
        res = CliRunner().invoke(app, [*args, "--allow-pickle"])
    assert res.exit_code == 0, res.output + repr(res.exception)


@pytest.mark.parametrize("command", ["rerank", "ablate"])
def test_cli_help_lists_allow_pickle(command):
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert "--allow-pickle" in res.output


def test_truncated_safetensors_adapter_is_refused_cleanly(trained_run, tmp_path):
    from lorank.reranker import Reranker

    ck = tmp_path / "ck"
    shutil.copytree(trained_run / "checkpoint-4", ck)
    (ck / "lorank_checkpoint.json").unlink()  # a plain PEFT adapter folder, not a lorank checkpoint
    f = ck / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="truncated"):
        Reranker.from_adapter(ck)


# --------------------------------------------------------------------------------- trust_remote_code
def test_trust_remote_code_is_off_on_every_load_path(trained_run, tiny, monkeypatch):
    """Record the kwargs of every from_pretrained call made while loading a model, an adapter, a reranker."""
    import transformers

    seen: list[tuple[str, object]] = []
    for name in ("AutoModelForSequenceClassification", "AutoTokenizer", "AutoModel", "AutoModelForCausalLM",
                 "AutoConfig"):
        cls = getattr(transformers, name)
        real = cls.from_pretrained.__func__

        def spy(klass, *a, _real=real, _name=name, **kw):
            seen.append((_name, kw.get("trust_remote_code", False)))
            return _real(klass, *a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    from lorank.models.loading import load_reranker, load_tokenizer
    from lorank.reranker import Reranker

    with one_thread():
        load_reranker(str(tiny["model"]))
        load_tokenizer(str(tiny["model"]))
        Reranker.from_adapter(trained_run)
        Reranker.from_pretrained(str(tiny["model"]), head_init="random")
    assert seen and all(v is False for _, v in seen), seen
    n = len(seen)
    load_reranker(str(tiny["model"]), trust_remote_code=True)  # only when asked
    assert any(v is True for _, v in seen[n:])


def test_no_load_path_hardcodes_trust_remote_code_or_unsafe_loads():
    bad = []
    for f in sorted(SRC.rglob("*.py")):
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"trust_remote_code\s*=\s*True", code):
                bad.append(f"{f.relative_to(SRC)}:{i}: {line.strip()}")
            if re.search(r"weights_only\s*=\s*False", code) or re.search(r"\bpickle\.loads?\(", code):
                bad.append(f"{f.relative_to(SRC)}:{i}: {line.strip()}")
            if re.search(r"torch\.load\(", code) and "weights_only=True" not in code:
                bad.append(f"{f.relative_to(SRC)}:{i}: torch.load without weights_only=True: {line.strip()}")
            if re.search(r"yaml\.(load|unsafe_load|full_load)\(", code):
                bad.append(f"{f.relative_to(SRC)}:{i}: unsafe YAML loader: {line.strip()}")
    assert not bad, "\n".join(bad)


# -------------------------------------------------------------------------------------------- safe_join
def test_safe_join_accepts_paths_inside(tmp_path):
    assert safe_join(tmp_path, "runs/a") == (tmp_path / "runs" / "a").resolve()
    assert safe_join(tmp_path, "a/../b") == (tmp_path / "b").resolve()
    assert safe_join(tmp_path, ".") == tmp_path.resolve()
    assert safe_join(tmp_path, "not/yet/there.json").parent == (tmp_path / "not" / "yet").resolve()
    (tmp_path / "inner").mkdir()
    os.symlink(tmp_path / "inner", tmp_path / "link_in")
    assert safe_join(tmp_path, "link_in/x") == (tmp_path / "inner" / "x").resolve()


@pytest.mark.parametrize("rel", ["..", "../x", "a/../../x", "a/b/../../../x", "/etc/passwd", "/", "~/x", "~root",
                                 "", "   ", "a\x00b", "C:\\x", "C:x", "\\\\server\\share\\x"])
def test_safe_join_refuses_escapes(tmp_path, rel):
    with pytest.raises(ConfigError):
        safe_join(tmp_path / "root", rel)


def test_safe_join_refuses_symlink_escapes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "escape")
    os.symlink("/etc", root / "etc")
    (root / "d").mkdir()
    os.symlink("../../outside", root / "d" / "up")
    for rel in ("escape", "escape/file.json", "etc/passwd", "d/up/x"):
        with pytest.raises(ConfigError, match="outside"):
            safe_join(root, rel)
    # a symlinked root itself is fine: paths are compared after resolving it
    os.symlink(root, tmp_path / "root_link")
    assert safe_join(tmp_path / "root_link", "x") == (root / "x").resolve()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rel=st.lists(st.sampled_from(["..", ".", "a", "b", "", "/", "~", "\x00", "..a", "a..", "...", "\\", "C:"]),
                    max_size=6).map("/".join) | st.text(max_size=12))
def test_safe_join_never_returns_a_path_outside(tmp_path_factory, rel):
    root = tmp_path_factory.getbasetemp() / "sj_root"
    root.mkdir(exist_ok=True)
    try:
        p = safe_join(root, rel)
    except ConfigError:
        return
    assert is_inside(root, p)


# ------------------------------------------------------------------------------------------ no server
_BIND = re.compile(r"0\.0\.0\.0|\.bind\(|\.listen\(|serve_forever|HTTPServer|ThreadingHTTPServer|socketserver|"
                   r"http\.server|uvicorn|flask|fastapi|aiohttp\.web|gradio|\.launch\(|xmlrpc\.server|"
                   r"multiprocessing\.connection\.Listener|socket\.socket\(")


def test_lorank_has_no_network_server():
    """lorank has no HTTP surface; keep it so (a report is static HTML, a study runs local processes)."""
    hits = []
    for f in sorted(SRC.rglob("*.py")):
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if _BIND.search(line.split("#")[0]):
                hits.append(f"{f.relative_to(SRC)}:{i}: {line.strip()}")
    assert not hits, "network server code in lorank:\n" + "\n".join(hits)
