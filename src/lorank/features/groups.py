"""The feature-group grammar shared by ``lorank features`` (what to extract) and ``lorank ltr`` (what to train on).

A group list is comma-free text items (one per ``--groups`` option, or ``+``-joined in an LTR row)::

    bm25                 first-stage score and rank            -> bm25_score, bm25_rank
    score                the reranker's own score              -> score
    mlp                  LoRA activations A x of every MLP projection of every layer
    mha                  the same for the attention projections
    lora                 both (every LoRA-wrapped projection)
    mlp:L5-15            layers 5..15 only (also L3, L0-3,7,9-11)
    mlp:up               one projection (short name, own name up_proj, or alias mlp.up); several: mlp:up,down
    mlp:L5-15:up:norm    selectors combine; ``norm`` keeps only the L2 norms, ``act`` only the r activations

Latent columns are named ``lora.L{layer}.{projection}.a{i}`` (i < r) and ``lora.L{layer}.{projection}.norm``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from lorank.errors import ConfigError

SIMPLE = ("bm25", "score")
LATENT = ("mlp", "mha", "lora")
DEFAULT_GROUPS = ("bm25", "score", "mlp")
GRAMMAR = ("bm25 | score | {mlp|mha|lora}[:L<a>-<b>|L<l>,...][:<proj>,...][:norm|act] "
           "(e.g. mlp:L5-15, mlp:up, mha:q,v:norm)")
BM25_COLUMNS = ("bm25_score", "bm25_rank")
SCORE_COLUMN = "score"
KEY_COLUMNS = ("qid", "docid")
_LATENT_COL = re.compile(r"^lora\.L(?P<layer>\d+)\.(?P<proj>[A-Za-z0-9_]+)\.(?P<part>a\d+|norm)$")


@dataclass(frozen=True)
class Group:
    """One parsed group: ``kind`` is bm25 / score / mlp / mha / lora."""

    text: str
    kind: str
    layers: frozenset[int] | None = None       # None: every layer
    projections: tuple[str, ...] | None = None  # raw names as written (resolved against a family later)
    part: str = "both"                           # both | norm | act

    @property
    def latent(self) -> bool:
        return self.kind in LATENT


def _layers(text: str, where: str) -> frozenset[int]:
    out: set[int] = set()
    for piece in text[1:].split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", piece.strip())
        if not m:
            raise ConfigError(f"feature group {where!r}: bad layer selector {text!r} (use L5, L5-15 or L1,3,5-7)")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise ConfigError(f"feature group {where!r}: empty layer range L{a}-{b}")
        out.update(range(a, b + 1))
    return frozenset(out)


def parse_group(text: str) -> Group:
    """One group from its text (see the module docstring); a bad one is a :class:`ConfigError` with the grammar."""
    t = str(text).strip()
    if not t:
        raise ConfigError(f"empty feature group; grammar: {GRAMMAR}")
    head, *rest = t.split(":")
    head = head.strip().lower()
    if head in SIMPLE:
        if rest:
            raise ConfigError(f"feature group {t!r}: {head} takes no selectors; grammar: {GRAMMAR}")
        return Group(t, head)
    if head not in LATENT:
        raise ConfigError(f"unknown feature group {t!r}; grammar: {GRAMMAR}")
    layers: frozenset[int] | None = None
    projs: tuple[str, ...] | None = None
    part = "both"
    for sel in rest:
        sel = sel.strip()
        if not sel:
            raise ConfigError(f"feature group {t!r}: empty selector; grammar: {GRAMMAR}")
        if sel in ("norm", "act"):
            part = sel
        elif re.match(r"[Ll]\d", sel):
            layers = (layers or frozenset()) | _layers(sel, t)
        else:
            projs = (projs or ()) + tuple(p.strip() for p in sel.split(",") if p.strip())
    return Group(t, head, layers, projs, part)


def parse_groups(items: Iterable[str] | str | None) -> list[Group]:
    """Groups from text items; an item may hold several joined by ``+`` (``bm25+score``)."""
    if items is None:
        items = DEFAULT_GROUPS
    if isinstance(items, str):
        items = [items]
    out = []
    for it in items:
        for part in str(it).split("+"):
            out.append(parse_group(part))
    if not out:
        raise ConfigError(f"no feature group given; grammar: {GRAMMAR}")
    return out


def resolve_projections(group: Group, arch: Any) -> tuple[str, ...]:
    """The family's projection names a latent group selects (component restriction included)."""
    comp = {"mlp": arch.mlp, "mha": arch.mha, "lora": arch.projections}[group.kind]
    if group.projections is None:
        return tuple(comp)
    out: list[str] = []
    for name in group.projections:
        cands = [name, f"{name}_proj", f"mlp.{name}", f"attn.{name}"]
        hit: tuple[str, ...] = ()
        for c in cands:
            if c in arch.projections:
                hit = (c,)
                break
            if c in arch.aliases:
                hit = tuple(arch.aliases[c])
                break
        hit = tuple(p for p in hit if p in comp)
        if not hit:
            raise ConfigError(f"feature group {group.text!r}: {name!r} is not a {group.kind} projection of the "
                              f"{arch.family} family (known: {', '.join(comp)})")
        out.extend(p for p in hit if p not in out)
    return tuple(out)


def latent_targets(groups: Sequence[Group], arch: Any, available: Iterable[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """``{(layer, projection): part}`` to extract: every LoRA-wrapped module the latent groups select.
    ``part`` is both / norm / act (the union when several groups select one module). A group that selects
    nothing the adapter has is a :class:`ConfigError`."""
    avail = set(available)
    out: dict[tuple[int, str], str] = {}
    for g in groups:
        if not g.latent:
            continue
        projs = resolve_projections(g, arch)
        hit = sorted(k for k in avail if k[1] in projs and (g.layers is None or k[0] in g.layers))
        if not hit:
            have = sorted({layer for layer, _ in avail})
            raise ConfigError(f"feature group {g.text!r} selects no LoRA module of this adapter (it wraps layers "
                              f"{have[0] if have else '-'}..{have[-1] if have else '-'}, projections "
                              f"{', '.join(sorted({p for _, p in avail}))})")
        for k in hit:
            prev = out.get(k)
            out[k] = g.part if prev in (None, g.part) else "both"
    return out


def latent_column(layer: int, proj: str, part: str) -> str:
    return f"lora.L{layer}.{proj}.{part}"


def parse_column(name: str) -> tuple[int, str, str] | None:
    """``lora.L5.up_proj.a3`` -> ``(5, 'up_proj', 'a3')``; None for a non-latent column."""
    m = _LATENT_COL.match(name)
    return (int(m.group("layer")), m.group("proj"), m.group("part")) if m else None


_COMPONENT_GUESS = {"mlp": ("gate_proj", "up_proj", "down_proj", "dense_h_to_4h", "dense_4h_to_h", "fc1", "fc2",
                            "c_fc", "w1", "w2", "w3"),
                    "mha": ("q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "dense", "qkv_proj",
                            "c_attn", "c_proj", "out_proj")}


def component_of_column(proj: str, components: dict[str, str] | None = None) -> str:
    """mlp / mha for a projection name (from the table's metadata when it has it, else lorank's known names)."""
    if components and proj in components:
        return components[proj]
    for comp, names in _COMPONENT_GUESS.items():
        if proj in names:
            return comp
    return "other"


def select_columns(groups: Sequence[Group], columns: Sequence[str], components: dict[str, str] | None = None,
                   arch: Any = None) -> list[str]:
    """The columns of a feature table that the groups select, in table order (for ``lorank ltr`` rows).
    With the table's ``arch`` (family), projection selectors resolve exactly as at extraction (aliases too);
    without it, a selector matches a projection by its name, ``<name>_proj`` or its first word."""
    keep: set[str] = set()
    for g in groups:
        exact = resolve_projections(g, arch) if arch is not None and g.latent and g.projections else None
        if g.kind == "bm25":
            keep.update(c for c in BM25_COLUMNS if c in columns)
        elif g.kind == "score":
            keep.update(c for c in (SCORE_COLUMN,) if c in columns)
        else:
            for c in columns:
                p = parse_column(c)
                if p is None:
                    continue
                layer, proj, part = p
                comp = component_of_column(proj, components)
                if g.kind != "lora" and comp != g.kind:
                    continue
                if g.layers is not None and layer not in g.layers:
                    continue
                if exact is not None and proj not in exact:
                    continue
                if exact is None and g.projections is not None and not any(proj in (n, f"{n}_proj") or proj.split("_")[0] == n
                                                         for n in g.projections):
                    continue
                if g.part == "norm" and part != "norm" or g.part == "act" and part == "norm":
                    continue
                keep.add(c)
    return [c for c in columns if c in keep]
