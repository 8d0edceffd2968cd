"""Where data lives: the data root, named evaluation sets, and the shared test data.

The data root is looked for, in order, at: the explicit argument, `$LORANK_DATA`,
`../shared/data` from the working directory, and `../shared/data` beside the repository.
A named evaluation set (`dl19`, `dl20`, `dl22`, `dl19-splade`, ...) is read from the first of those holding its
folder, and failing that from ir_datasets (where it has one: DL22 and the SPLADE++ first stages have none). Which
role each set plays (dev: choose; test: report only) is :mod:`lorank.data.roles`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from lorank.data.trec import load_qrels, load_run
from lorank.data.tsv import load_collection, load_queries
from lorank.errors import ConfigError, DataError
from lorank.data.irds import load_ir_dataset
from lorank.data.rerankset import RerankSet, load_trec_dl_dir

ENV_VAR = "LORANK_DATA"
REPO_ROOT = Path(__file__).resolve().parents[3]

# name -> (folder under the data root, ir_datasets id or None where ir_datasets has no equal of the folder: DL22's
# qrels here are NIST's de-duplicated judgments spread to identical texts (not ir_datasets' withDupes file, over a
# 20 GB v2 corpus), and ir_datasets has no SPLADE++ first stage)
EVAL_SETS: dict[str, tuple[str, str | None]] = {
    "dl19": ("trec-dl-2019", "msmarco-passage/trec-dl-2019/judged"),
    "trec-dl-2019": ("trec-dl-2019", "msmarco-passage/trec-dl-2019/judged"),
    "dl20": ("trec-dl-2020", "msmarco-passage/trec-dl-2020/judged"),
    "trec-dl-2020": ("trec-dl-2020", "msmarco-passage/trec-dl-2020/judged"),
    "dl22": ("trec-dl-2022", None),
    "trec-dl-2022": ("trec-dl-2022", None),
    "dl19-splade": ("trec-dl-2019-splade", None),
    "trec-dl-2019-splade": ("trec-dl-2019-splade", None),
    "dl20-splade": ("trec-dl-2020-splade", None),
    "trec-dl-2020-splade": ("trec-dl-2020-splade", None),
    "dl22-splade": ("trec-dl-2022-splade", None),
    "trec-dl-2022-splade": ("trec-dl-2022-splade", None),
}


def _shared_places() -> list[tuple[str, Path]]:
    places = [
        ("../shared/data from the working directory", Path.cwd() / ".." / "shared" / "data"),
        ("../shared/data beside the repository", REPO_ROOT.parent / "shared" / "data"),
    ]
    if places[0][1].resolve() == places[1][1].resolve():
        return places[:1]
    return places


def _roots(explicit: str | Path | None) -> Iterator[tuple[str, Path | None]]:
    yield "data_root argument", Path(explicit) if explicit is not None else None
    env = os.environ.get(ENV_VAR)
    yield f"${ENV_VAR}", Path(env) if env else None
    yield from _shared_places()


def find_shared_data() -> Path | None:
    """The shared data folder (`../shared/data`), or None when it is not there."""
    for _, path in _shared_places():
        if path.is_dir():
            return path.resolve()
    return None


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The first existing folder among: `explicit`, `$LORANK_DATA`, `../shared/data`."""
    tried = []
    for place, path in _roots(explicit):
        if path is not None and path.is_dir():
            return path
        tried.append(f"{place}: " + ("not given" if path is None else f"no folder {path}"))
    raise DataError(None, None, "no data folder found; tried:\n  - " + "\n  - ".join(tried))


def expand_data_path(path: str, data_root: str | Path | None = None) -> str:
    """`path` with environment variables expanded; `${LORANK_DATA}` (or `$LORANK_DATA`) stands for the data
    folder that `resolve_data_root(data_root)` finds (so it works with the shared folder and no variable set).
    A variable that stays unset is left as written, and the file check names it."""
    if "LORANK_DATA" in path and not os.environ.get("LORANK_DATA"):
        try:
            root = str(resolve_data_root(data_root).resolve())
        except DataError:
            root = None
        if root is not None:
            path = path.replace("${LORANK_DATA}", root).replace("$LORANK_DATA", root)
    return os.path.expandvars(path)


def resolve_eval_set(name_or_path: str, data_root: str | Path | None = None) -> RerankSet:
    """A reranking evaluation set by folder path or by name (`dl19`/`trec-dl-2019`, `dl20`/`trec-dl-2020`,
    `dl22`/`trec-dl-2022`, `dl19-splade`/`trec-dl-2019-splade`, ...: the keys of :data:`EVAL_SETS`)."""
    as_path = Path(name_or_path)
    if as_path.is_dir():
        return load_trec_dl_dir(as_path)
    key = name_or_path.strip().lower()
    if key not in EVAL_SETS:
        if as_path.exists():
            problem = "is a file: a reranking set is a folder (queries.tsv, qrels.txt, a TREC run, collection.tsv)"
        elif "/" in name_or_path or as_path.suffix or name_or_path.startswith("."):
            problem = "no such folder (a reranking set is a folder with queries.tsv, qrels.txt and a TREC run)"
        else:
            problem = f"not a folder, and not a named set: the names are {', '.join(EVAL_SETS)}"
        raise DataError(name_or_path, None, problem)
    folder, irds_id = EVAL_SETS[key]
    tried = []
    for place, root in _roots(data_root):
        if root is None:
            tried.append(f"{place}: not given")
            continue
        directory = root / folder
        if (directory / "queries.tsv").is_file():
            return load_trec_dl_dir(directory, name=folder)
        tried.append(f"{place}: no {directory / 'queries.tsv'}")
    if irds_id is None:
        tried.append(f"ir_datasets: not available for {folder} (only the folder {folder}/ under the data root)")
    else:
        try:
            return load_ir_dataset(irds_id, name=folder)
        except DataError as e:
            tried.append(f"ir_datasets {irds_id}: {e.problem}")
    raise DataError(name_or_path, None, "evaluation set not found; tried:\n  - " + "\n  - ".join(tried))


def load_eval_data(eval_set: Any = None, queries: str | Path | None = None, run: str | Path | None = None,
                   collection: str | Path | None = None, qrels: str | Path | None = None,
                   data_root: str | Path | None = None, require_qrels: bool = True) -> RerankSet:
    """A :class:`RerankSet` from a name/folder (``dl19``), an existing RerankSet, or the four files; ``qrels``
    replaces the set's own judgements. ``require_qrels``: a set without judgements is an error (analyses that
    score against relevance); ``lorank features`` reads unjudged candidate runs too."""
    if isinstance(eval_set, RerankSet):
        rs = eval_set
    elif eval_set:
        rs = resolve_eval_set(str(eval_set), data_root)
    else:
        if not (queries and run and collection):
            raise ConfigError("give an eval set (dl19, a folder), or all of queries, run and collection (+ qrels)")
        qs = load_queries(queries)
        ps = load_collection(collection)
        rs = RerankSet(Path(str(run)).stem, qs, ps, load_run(run, known_qids=qs, known_docids=ps), None)
    if qrels:
        rs = RerankSet(rs.name, rs.queries, rs.passages, rs.run, load_qrels(qrels))
    if require_qrels and not rs.qrels:
        raise DataError(getattr(rs, "name", None), None, "this analysis needs relevance judgements (qrels)")
    return rs


def eval_label(name: str) -> str:
    """A short, file-name-safe label for an eval set given by name (dl19) or by folder path."""
    p = Path(str(name))
    label = p.name if ("/" in str(name) or p.is_dir()) else str(name)
    return "".join(c if c.isalnum() or c in "-_+@." else "_" for c in label) or "eval"
