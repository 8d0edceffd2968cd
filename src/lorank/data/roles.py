"""The roles of evaluation sets under the project's evaluation protocol (``../shared/data/README.md``).

A figure reported without its role is not a result. The roles:

- **dev** (:data:`DEV`): TREC DL 2019 + 2020 (97 queries; BM25 or SPLADE++ first stage). Anything may be chosen on
  them: recipe, learning rate, checkpoint, stopping, thresholds. Every set that is neither test nor out of domain is
  dev (a tiny synthetic folder of a test included).
- **test** (:data:`TEST`): TREC DL 2022 (76 queries) with BM25 (``dl22``, folder ``trec-dl-2022``) and with SPLADE++
  (``dl22-splade``, folder ``trec-dl-2022-splade``), plus whatever a training config lists under
  ``eval.test_sets``. A test set is scored once, on a frozen model (the final checkpoint of a finished training run,
  an exported adapter, a finished study), and nothing may be chosen on it: a number on the test set may not change
  what is trained or shipped afterwards. Training therefore never scores it on intermediate checkpoints
  (:class:`lorank.train.config.EvalSpec` refuses a test set in ``eval.sets``).
- **out of domain** (:data:`OOD`): SciFact / BEIR (BM25 first stage from ``lorank retrieve --beir``).
- **train**: MS MARCO train (``msmarco-train-12k``, ``msmarco-train-sample``). No evaluation set's queries, qrels or
  passages may enter training data, a mining pool or a teacher cache: mining over an evaluation pool is refused
  (:mod:`lorank.mine`), and mining drops (and counts) training passages found in any evaluation pool
  (:func:`protocol_eval_sets` are always guarded).

DL20's judged pairs may still train the small smoke check (train DL20, evaluate DL19) of the demo and the tests;
such a model is never reported against DL20.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from lorank.data.sources import EVAL_SETS

DEV = "dev"
TEST = "test"
OOD = "ood"
ROLES = (DEV, TEST, OOD)

#: the protocol's test sets, by name (keys of :data:`lorank.data.sources.EVAL_SETS`)
DEFAULT_TEST_SETS = ("dl22", "dl22-splade")
#: the protocol's dev sets, by name
DEFAULT_DEV_SETS = ("dl19", "dl20", "dl19-splade", "dl20-splade")
#: names and folder names (labels) that are the protocol's test sets
_TEST_KEYS = frozenset({"dl22", "trec-dl-2022", "dl22-splade", "trec-dl-2022-splade"})


def set_key(label_or_name: str) -> str:
    """The set a name, label or folder path stands for, as the folder name under the data root when it is a named
    set (``dl19`` -> ``trec-dl-2019``), else the folder's (or the label's) own name, lower case. A metrics label's
    suffixes (``dl19+bm25@0.5`` fusion rows, ``[:10q]`` subsets) are dropped."""
    s = str(label_or_name).strip()
    s = Path(s).name if ("/" in s or "\\" in s) else s
    s = re.sub(r"\[:\d+q\]$", "", s.split("+")[0]).strip().lower()
    return EVAL_SETS[s][0] if s in EVAL_SETS else s


def is_default_test_set(label_or_name: str) -> bool:
    """Whether the protocol makes this set a test set (DL22 with BM25 or SPLADE++), by name, label or folder."""
    return set_key(label_or_name) in {set_key(k) for k in _TEST_KEYS}


def role_of(label_or_name: str, test_sets: Iterable[str] = ()) -> str:
    """``test`` for a set declared in ``test_sets`` or one of the protocol's test sets (DL22, DL22-SPLADE);
    ``ood`` for SciFact / BEIR; ``dev`` for every other set (DL19, DL20, folders of one's own)."""
    key = set_key(label_or_name)
    if is_default_test_set(key) or key in {set_key(t) for t in test_sets}:
        return TEST
    if "scifact" in key or key.startswith("beir"):
        return OOD
    return DEV


def protocol_eval_sets() -> tuple[str, ...]:
    """Every evaluation set of the protocol (dev, then test), by name: what mining always guards against."""
    return DEFAULT_DEV_SETS + DEFAULT_TEST_SETS
