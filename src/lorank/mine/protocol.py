"""The evaluation protocol where training data is mined (``../shared/data/README.md``, :mod:`lorank.data.roles`).

- Negatives are mined from training passages only: a mining collection that is an evaluation set's candidate pool
  (``dl20``, ``trec-dl-2022-splade``, any folder of an evaluation set, any set the config evaluates on) is refused
  (:func:`check_mining_collections`), when a run would mine and by ``lorank mine``. A config's validation does
  not refuse it: the committed legacy study mined over the DL20 pool and must still load and be reported
  (:func:`protocol_violations` says what such a config did wrong).
- The sets mining guards (:func:`guarded_eval_sets`) are, whatever ``exclude_eval`` lists: those it lists, every set
  the config evaluates on (``eval.sets`` + ``eval.test_sets``) and the protocol's dev and test sets
  (:func:`lorank.data.roles.protocol_eval_sets`). A training query that is one of their queries (by id and text, or
  by text) is refused; a training positive or negative whose passage id or text lies in one of their pools is
  dropped and counted (:class:`lorank.mine.negatives.MineStats`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from lorank.data.roles import TEST, protocol_eval_sets, role_of, set_key
from lorank.data.sources import EVAL_SETS, resolve_eval_set
from lorank.errors import ConfigError, DataError

log = logging.getLogger("lorank.mine")

#: the default of ``MineSpec.exclude_eval`` (a legacy config that leaves it out excluded DL19 only)
_DEFAULT_EXCLUDE = ("dl19",)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def pool_role(spec: str, evaluated: Iterable[str] = (), test_sets: Iterable[str] = ()) -> str | None:
    """The role (dev / test / ood) of the evaluation set whose candidate pool the mining collection ``spec`` is,
    or None when it is not one: a named set (``dl20``), a folder (or its ``collection.tsv``) named like one
    (``trec-dl-2020``), a set the config evaluates on (``evaluated``), or a folder with a first-stage ``*.run``
    (a reranking set's candidates)."""
    spec = str(spec).strip()
    if spec == "self" or not spec:
        return None
    if spec.lower() in EVAL_SETS:
        return role_of(spec, test_sets)
    p = Path(spec)
    folder = p.parent if (p.suffix == ".tsv" or p.is_file()) else p
    folders = {f for f, _ in EVAL_SETS.values()}
    if folder.name.lower() in folders:
        return role_of(folder.name, test_sets)
    for e in evaluated:  # a folder the config evaluates on
        if folder.is_dir() and Path(str(e)).is_dir() and Path(str(e)).resolve() == folder.resolve():
            return role_of(str(e), test_sets)
    if folder.is_dir() and any(f.is_file() for f in folder.glob("*.run")):
        return role_of(folder.name, test_sets)
    return None


def eval_pool_collections(collections: Sequence[str], evaluated: Iterable[str] = (), test_sets: Iterable[str] = (),
                          field: str = "mine.collections") -> list[str]:
    """One message per mining collection that is an evaluation set's candidate pool."""
    evaluated, test_sets = list(evaluated), list(test_sets)
    out = []
    for c in collections:
        role = pool_role(c, evaluated, test_sets)
        if role is not None:
            out.append(f"{field}: {c} is an evaluation set's candidate pool ({role}); the protocol mines negatives "
                       "from training passages only")
    return out


def check_mining_collections(collections: Sequence[str], evaluated: Iterable[str] = (), test_sets: Iterable[str] = (),
                             field: str = "mine.collections") -> None:
    """Refuse (:class:`ConfigError`, every problem at once) mining over an evaluation set's candidate pool."""
    problems = eval_pool_collections(collections, evaluated, test_sets, field)
    if problems:
        raise ConfigError(problems + ["mine over self (the training folder's passages) or another collection of "
                                      "training passages"])


def guarded_eval_sets(exclude_eval: Iterable[str] = (), evaluated: Iterable[str] = (),
                      protocol: bool = True) -> list[str]:
    """The evaluation sets mining guards: ``exclude_eval``, then the sets the config evaluates on, then (with
    ``protocol``) the protocol's dev and test sets; each set once (``dl19`` and ``trec-dl-2019`` are one)."""
    out: dict[str, str] = {}
    for name in [*exclude_eval, *evaluated, *(protocol_eval_sets() if protocol else ())]:
        key = str(Path(str(name)).resolve()) if Path(str(name)).is_dir() else set_key(name)
        out.setdefault(key, str(name))
    return list(out.values())


@dataclass
class EvalGuard:
    """The evaluation sets mining guards, loaded: their queries (by set) and the ids and texts of their pools."""

    sets: dict[str, Any] = field(default_factory=dict)  # name -> RerankSet
    pool_ids: set[str] = field(default_factory=set)
    pool_texts: set[str] = field(default_factory=set)
    not_found: list[str] = field(default_factory=list)  # protocol sets missing here (named sets are an error)

    def in_pool(self, pid: str, text: str) -> bool:
        return pid in self.pool_ids or _norm(text) in self.pool_texts


def load_guard(names: Sequence[str], data_root: str | Path | None = None,
               required: Iterable[str] | None = None) -> EvalGuard:
    """Load the guarded sets. A set in ``required`` (the ones the config or the command names) that cannot be
    found is an error; a protocol set that is not here (no data root, no ir_datasets) is skipped, warned about and
    listed in ``not_found``."""
    required_keys = {set_key(r) for r in (names if required is None else required)}
    g = EvalGuard()
    for name in names:
        try:
            rs = resolve_eval_set(name, data_root)
        except DataError:
            if set_key(name) in required_keys:
                raise
            g.not_found.append(name)
            continue
        g.sets[name] = rs
        g.pool_ids.update(rs.passages)
        g.pool_texts.update(_norm(p.text) for p in rs.passages.values())
    if g.not_found:
        log.warning("mining guard: the protocol's evaluation sets %s are not here (no data folder holds them): their "
                    "queries and pools are not checked", ", ".join(g.not_found))
    return g


def protocol_violations(train_config: dict[str, Any], guarded: Iterable[str] | None = None) -> list[str]:
    """What a training config (a ``TrainConfig`` dict, e.g. a study run's ``train_config``) does against the
    protocol, for reports to flag: mining over an evaluation set's pool; evaluating on a set that mining did not
    guard (``guarded``: the sets the run's mining guarded, as its ``train_summary.json`` records them; None: a
    run mined before the guard existed, which guarded ``exclude_eval`` only); training on the test set's judged
    pairs, or on the judged pairs of a set it evaluates on. Empty: nothing found."""
    ev = train_config.get("eval") or {}
    tests = list(ev.get("test_sets") or [])
    evaluated = list(ev.get("sets") or []) + tests
    out = []
    for i, d in enumerate(train_config.get("data") or []):
        kind, path = d.get("kind", "trec"), str(d.get("path", ""))
        if kind == "trec" and role_of(path, tests) == TEST:
            out.append(f"data[{i}]: trains on {path}, a test set: its queries and qrels may not enter training data")
        elif kind == "trec" and set_key(path) in {set_key(e) for e in evaluated}:
            out.append(f"data[{i}]: trains on {path}'s judged pairs and evaluates on {path}: its figures on "
                       f"{path} are not results")
        mine = d.get("mine")
        if kind != "msmarco" or not mine:
            continue
        out += eval_pool_collections(mine.get("collections") or ["self"], evaluated, tests,
                                     field=f"data[{i}].mine.collections")
        have = list(mine.get("exclude_eval", _DEFAULT_EXCLUDE)) if guarded is None else list(guarded)
        keys = {set_key(x) for x in have}
        missing = [e for e in evaluated if set_key(e) not in keys]
        if missing:
            out.append(f"data[{i}].mine.exclude_eval: {', '.join(missing)} evaluated on but not guarded when mining: "
                       "their queries were not checked against the training queries, nor their pool passages "
                       "dropped from the training data")
    return out
