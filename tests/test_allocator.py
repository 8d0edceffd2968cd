"""lorank.allocator: which allocator the training and scoring verbs run on, and the re-execution that preloads it."""
import os
import subprocess
import sys

import pytest

from lorank import allocator as al
from lorank.errors import ConfigError


def _fake_libs(tmp_path, *names):
    for n in names:
        (tmp_path / n).write_bytes(b"")
    return [str(tmp_path)]


def test_auto_takes_tcmalloc_when_installed_else_glibc(tmp_path):
    assert al.choose(None, [str(tmp_path)]) == ("glibc", None)
    dirs = _fake_libs(tmp_path, "libtcmalloc_minimal.so.4", "libjemalloc.so.2")
    assert al.choose("auto", dirs) == ("tcmalloc", str(tmp_path / "libtcmalloc_minimal.so.4"))
    assert al.choose("jemalloc", dirs) == ("jemalloc", str(tmp_path / "libjemalloc.so.2"))
    assert al.choose(" GLIBC ", dirs) == ("glibc", None)


def test_a_named_allocator_that_is_missing_or_unknown_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"LORANK_ALLOCATOR=tcmalloc: its library .* install libtcmalloc-minimal4"):
        al.choose("tcmalloc", [str(tmp_path)])
    with pytest.raises(ConfigError, match="expected auto, tcmalloc, jemalloc or glibc"):
        al.choose("mimalloc", [str(tmp_path)])


def test_active_allocator_reads_the_mapped_libraries():
    libc = "7f00-7f01 r-xp 0 fe:00 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    assert al.active_allocator(libc) == "glibc"
    assert al.active_allocator(libc + "7f02-7f03 r--p 0 fe:00 2 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n") == "tcmalloc"
    assert al.active_allocator(libc + "7f02-7f03 r--p 0 fe:00 2 /usr/lib/libjemalloc.so.2\n") == "jemalloc"
    assert al.active_allocator() in ("glibc", "tcmalloc", "jemalloc")  # this process


PROBE = """
import os, sys
from lorank.allocator import DONE_VAR, active_allocator, reexec_with_allocator
reexec_with_allocator()
print(active_allocator(), os.environ.get(DONE_VAR), sys.argv[1:])
"""


def _probe(tmp_path, verb, setting):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", al.DONE_VAR)}
    env[al.ENV_VAR] = setting
    out = subprocess.run([sys.executable, str(script), verb, "--x"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split(None, 2)


def test_the_training_and_scoring_verbs_reexecute_once_with_tcmalloc_preloaded(tmp_path):
    if al.find_library("tcmalloc") is None:
        pytest.skip("libtcmalloc-minimal4 is not installed (scripts/setup.sh installs it where it runs as root)")
    name, done, args = _probe(tmp_path, "train", "auto")
    assert (name, done) == ("tcmalloc", "tcmalloc") and "'train', '--x'" in args  # the same arguments, once
    assert _probe(tmp_path, "rerank", "auto")[:2] == ["tcmalloc", "tcmalloc"]  # a verb that scores: too
    assert _probe(tmp_path, "models", "auto")[:2] == ["glibc", "None"]  # a verb that runs no model: untouched
    assert _probe(tmp_path, "train", "glibc")[:2] == ["glibc", "None"]
