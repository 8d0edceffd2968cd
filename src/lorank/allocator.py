"""The memory allocator of long CPU work: tcmalloc instead of glibc's malloc, by re-executing the command.

Measured on the 2-core AMD EPYC (AVX512-BF16) training the 135M reference run in bf16 (session 11, docs/speed.md):
with glibc's malloc a training process slows as it ages (337 -> 290 tokens/s over its first 150 steps, 235 after
~400; a fresh process resumed from the same checkpoint trains at 352) while its RSS grows to 8.4 GB, and py-spy
shows the main thread's share in ``_int_malloc`` growing (13.5% -> 17%): the heap fragments under the packed
forward's tensors, whose sizes change every step. The same run under tcmalloc trains at ~377 tokens/s with an
RSS of ~4 GB.

Scoring gains too: ``lorank rerank``'s path under tcmalloc against glibc, a fresh process per allocator
(benchmarks/score_allocator.py, session 28): 1.34x in a process's first pass over 1,000 DL19 pairs, 1.12x in its
second. The scoring verbs had run on glibc: 26.7-28.1 pairs/s for a checkpoint whose own evaluation inside its
training process had run at 33.8 (results/score_dtype.json).

An allocator can only be chosen before the process starts (``LD_PRELOAD``), so the ``lorank`` command re-executes
itself once, with the library preloaded, for the verbs that train or score with a model (:data:`VERBS`).
``$LORANK_ALLOCATOR``:

- ``auto`` (or unset): tcmalloc when its library is installed (Debian: ``libtcmalloc-minimal4``), else glibc;
- ``tcmalloc`` / ``jemalloc``: that one, or an error naming the package to install;
- ``glibc``: no preload.

The Python API (``lorank.train(...)``) runs in the caller's process: start Python with
``LD_PRELOAD=$(python -c "import lorank.allocator as a; print(a.find_library('tcmalloc'))")`` to get the same.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from lorank.errors import ConfigError

log = logging.getLogger("lorank")

ENV_VAR = "LORANK_ALLOCATOR"
#: set in the re-executed process, so that it never re-executes again
DONE_VAR = "LORANK_ALLOCATOR_PRELOADED"
#: the verbs that train (a study or the demo trains too), and those that score with a model: rerank's scoring under
#: tcmalloc ran 1.34x glibc's rate in a fresh process's first pass, 1.12x in its second (benchmarks/score_allocator.py,
#: results/score_allocator.json, session 28); ablate, features and analyze run the same forward (measured on rerank
#: only; `analyze weights` runs none and only pays the one re-execution)
VERBS = ("train", "study", "demo", "rerank", "ablate", "analyze", "features")
LIBRARIES = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2",),
}
PACKAGES = {"tcmalloc": "libtcmalloc-minimal4 (Debian/Ubuntu) or gperftools", "jemalloc": "libjemalloc2 (Debian/Ubuntu)"}
SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
               "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu")


def find_library(name: str, dirs: tuple[str, ...] | list[str] = SEARCH_DIRS) -> str | None:
    """The path of allocator ``name``'s shared library, or None when it is not installed."""
    for d in dirs:
        for lib in LIBRARIES[name]:
            p = Path(d) / lib
            if p.is_file():
                return str(p)
    return None


def active_allocator(maps: str | None = None) -> str:
    """The allocator this process runs on: ``tcmalloc``, ``jemalloc`` or ``glibc`` (read from /proc/self/maps)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return "unknown"
    for name, libs in LIBRARIES.items():
        if any(lib.split(".so")[0] + ".so" in maps for lib in libs):
            return name
    return "glibc"


def choose(setting: str | None, dirs: tuple[str, ...] | list[str] = SEARCH_DIRS) -> tuple[str, str | None]:
    """(allocator, library to preload or None) for a ``$LORANK_ALLOCATOR`` value."""
    setting = (setting or "auto").strip().lower()
    if setting == "glibc":
        return "glibc", None
    if setting == "auto":
        lib = find_library("tcmalloc", dirs)
        return ("tcmalloc", lib) if lib else ("glibc", None)
    if setting in LIBRARIES:
        lib = find_library(setting, dirs)
        if lib is None:
            raise ConfigError(f"${ENV_VAR}={setting}: its library ({' or '.join(LIBRARIES[setting])}) is not installed "
                              f"in {', '.join(dirs)}; install {PACKAGES[setting]}, or set {ENV_VAR}=auto or glibc")
        return setting, lib
    raise ConfigError(f"${ENV_VAR}={setting!r}: expected auto, tcmalloc, jemalloc or glibc")


def reexec_with_allocator(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> None:
    """Re-execute this ``lorank`` command with the chosen allocator preloaded, for the verbs that train or score.
    Returns (doing nothing) when the verb is not one of them, when the allocator is already the one chosen, or in the
    re-executed process itself; never returns otherwise."""
    argv = list(sys.argv if argv is None else argv)
    env = os.environ if environ is None else environ
    if len(argv) < 2 or argv[1] not in VERBS or env.get(DONE_VAR) or not Path(argv[0]).is_file():
        return
    name, lib = choose(env.get(ENV_VAR))
    if lib is None or active_allocator() == name:
        return
    new_env = dict(env)
    new_env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    new_env[DONE_VAR] = name
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, argv[0], *argv[1:]], new_env)
