"""Activation patching: how much of the fine-tuned reranker's gain does one layer's activation carry?

Run the base model (every LoRA delta switched off per ``LoraLayer``; the trained score head stays) and
replace the output of decoder layer l (site ``layer``), or only its attention (``attn``) or MLP (``mlp``)
block output, by the fine-tuned model's activation recorded on the same inputs. The layers above then
run without LoRA on the patched residual stream. Scores and nDCG@10 are measured per patch and reported
as the percentage of the fine-tuned gain restored (0% = base, 100% = fine-tuned).

Patching the last layer's output (or every attention and MLP block) gives the fine-tuned scores
exactly. Layers whose output cannot change are replayed from :class:`LayerOutputCache`: a layer-output
patch at l computes only layers l+1..L-1; a block patch at l computes layers l..L-1.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from lorank.ablate import ablated, Mask
from lorank.ablate.cache import LayerOutputCache
from lorank.analyze.common import ProgressFactory, encode_pairs, select_pairs, select_queries
from lorank.analyze.probes import _last_token_hooks, save_features
from lorank.atomic import atomic_write_json
from lorank.batching import length_chunks, pad_chunk
from lorank.errors import ConfigError
from lorank.evaluation import evaluate
from lorank.inference.forward_context import autocast_ctx
from lorank.inference.runs import rerank_to_run
from lorank.lora.spec import parse_layers
from lorank.models.arch import arch_for, decoder_layers
from lorank.plotting import pyplot, save_figure
from lorank.subject import Subject

SITE_KINDS = ("layer", "attn", "mlp")


@dataclass(frozen=True)
class Site:
    kind: str   # layer | attn | mlp
    layer: int

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise ConfigError(f"unknown patch site {self.kind!r} (use {', '.join(SITE_KINDS)})")


def _block(model: Any, layer: int, kind: str) -> Any:
    arch = arch_for(model.config)
    return getattr(decoder_layers(model)[layer], arch.attn_block if kind == "attn" else arch.mlp_block)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@contextlib.contextmanager
def _record_blocks(model: Any, keys: Sequence[tuple[str, int]], store: dict[tuple[str, int], Any]) -> Iterator[None]:
    hooks = []
    for kind, l in keys:
        def hook(mod: Any, inp: Any, out: Any, key: tuple[str, int] = (kind, l)) -> None:
            store[key] = _first(out)
        hooks.append(_block(model, l, kind).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


@contextlib.contextmanager
def _replace_blocks(model: Any, repl: dict[tuple[str, int], torch.Tensor]) -> Iterator[None]:
    hooks = []
    for (kind, l), t in repl.items():
        def hook(mod: Any, inp: Any, out: Any, t: torch.Tensor = t) -> Any:
            return (t,) + tuple(out[1:]) if isinstance(out, tuple) else t
        hooks.append(_block(model, l, kind).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


@dataclass
class PatchScores:
    scores: dict[str, np.ndarray]   # 'base', 'finetuned' and one entry per patch config
    wall_s: float
    layer_calls: int                # decoder layers computed in patched runs
    naive_layer_calls: int          # the same without replaying cached layers
    features: dict[str, np.ndarray] | None = None  # 'base' / 'finetuned': (n, L + 1, d) last-token states


def patch_scores(model: Any, seqs: Sequence[list[int]], pad_id: int, configs: dict[str, Sequence[Site]],
                 batch_tokens: int = 4096, bf16: bool = False, features: bool = False,
                 progress: Callable[[int], None] | None = None) -> PatchScores:
    """Scores of the fine-tuned model, the base (LoRA off) model and every patch config (a set of sites
    whose fine-tuned activations are written into the base model's forward). With ``features``, the
    two unpatched passes also keep every layer's last-token state, as :func:`extract_features` does
    (probes on the same pairs at no extra forward cost)."""
    L = len(decoder_layers(model))
    for name, sites in configs.items():
        if name in ("base", "finetuned"):
            raise ConfigError(f"patch config name {name!r} is reserved")
        for s in sites:
            if not 0 <= s.layer < L:
                raise ConfigError(f"patch site {s.kind}@{s.layer} is outside layers 0-{L - 1}")
    block_keys = sorted({(s.kind, s.layer) for sites in configs.values() for s in sites if s.kind != "layer"},
                        key=lambda k: (k[1], k[0]))
    plan = {}
    for name, sites in configs.items():
        top = max((s.layer for s in sites if s.kind == "layer"), default=-1)
        blocks = [s for s in sites if s.kind != "layer" and s.layer > top]
        if top >= 0:
            start, source = top + 1, "ft"       # layers <= top: irrelevant except top, which is patched
        else:
            start, source = (min(s.layer for s in blocks) if blocks else L), "base"  # unchanged below
        plan[name] = (start, source, [(s.kind, s.layer) for s in blocks])
    need_base_cache = any(src == "base" and start > 0 for start, src, _ in plan.values())
    dev = next(model.parameters()).device
    out = {k: np.empty(len(seqs)) for k in ("base", "finetuned", *configs)}
    feats: dict[str, np.ndarray] = {}
    calls = naive = 0
    t0 = time.perf_counter()
    model.eval()
    with torch.inference_mode(), autocast_ctx(model, bf16):
        for idx in length_chunks([len(s) for s in seqs], batch_tokens):
            ids, mask = pad_chunk([seqs[i] for i in idx], pad_id)
            ids, mask = ids.to(dev), mask.to(dev)
            run = lambda: model(input_ids=ids, attention_mask=mask).logits.float().reshape(-1).cpu().numpy()  # noqa: E731
            last = {"idx": mask.sum(1) - 1}
            stores: dict[str, list[list[torch.Tensor]]] = {s: [[] for _ in range(L + 1)] for s in ("base", "finetuned")}

            def keep(state: str) -> Any:
                return _last_token_hooks(model, stores[state], last) if features else contextlib.nullcontext()

            ft_cache, ft_blocks = LayerOutputCache(model), {}
            with ft_cache.record(), _record_blocks(model, block_keys, ft_blocks), keep("finetuned"):
                out["finetuned"][idx] = run()
            with ablated(model, Mask("off")):
                base_cache = LayerOutputCache(model)
                with base_cache.record() if need_base_cache else contextlib.nullcontext(), keep("base"):
                    out["base"][idx] = run()
                if features:
                    for state, st in stores.items():
                        f = torch.stack([torch.cat(x) for x in st], dim=1).numpy()
                        if state not in feats:
                            feats[state] = np.empty((len(seqs), L + 1, f.shape[-1]), dtype=np.float32)
                        feats[state][idx] = f
                for name, (start, source, blocks) in plan.items():
                    cache = LayerOutputCache(model)
                    cache.outputs = list((ft_cache if source == "ft" else base_cache).outputs[:start]) + \
                        [None] * (L - start)
                    with cache.replay_below(start), _replace_blocks(model, {k: ft_blocks[k] for k in blocks}):
                        out[name][idx] = run()
                    calls += L - start
                    naive += L
                    if progress:
                        progress(len(idx))
            del ft_cache, base_cache, ft_blocks
            if progress:
                progress(2 * len(idx))
    return PatchScores(out, time.perf_counter() - t0, calls, naive, feats or None)


def sweep_configs(num_layers: int, layers: Sequence[int], kinds: Sequence[str], exact_check: bool = True,
                  block_layers: Sequence[int] | None = None) -> dict[str, list[Site]]:
    """``{kind}@{l}`` for each site kind and layer (``block_layers``, if given, for attn / mlp). The last
    layer's output (free: every layer is replayed) is always included; with ``exact_check`` also
    ``all-blocks`` (every attention and MLP block, one full forward). Both must give the fine-tuned scores."""
    cfg: dict[str, list[Site]] = {}
    for k in kinds:
        if k not in SITE_KINDS:
            raise ConfigError(f"unknown patch site {k!r} (use {', '.join(SITE_KINDS)})")
        for l in (layers if k == "layer" or block_layers is None else block_layers):
            cfg[f"{k}@{l}"] = [Site(k, l)]
    cfg.setdefault(f"layer@{num_layers - 1}", [Site("layer", num_layers - 1)])
    if exact_check:
        cfg["all-blocks"] = [Site(k, l) for l in range(num_layers) for k in ("attn", "mlp")]
    return cfg


def _restored(v: float, base: float, ft: float) -> float | None:
    return 100.0 * (v - base) / (ft - base) if abs(ft - base) > 1e-12 else None


def patch(subject: Subject, out_dir: str | Path | None = None, max_queries: int | None = 15, depth: int = 20,
          sites: Sequence[str] = ("layer",), layers: str | Sequence[int] | None = None,
          block_layers: str | Sequence[int] | None = None, exact_check: bool = True, rel_threshold: int = 2,
          seed: int = 0, batch_tokens: int = 4096, features_out: str | Path | None = None, plots: bool = True,
          progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Activation patching of ``subject``'s reranker (:func:`lorank.subject.resolve_subject`; its candidates
    must be judged) over the top ``depth`` candidates of ``max_queries`` queries; writes ``patch.json`` and
    ``patch.png`` into ``out_dir`` (default: the checkpoint's ``analysis/``). ``sites``: any of layer / attn /
    mlp; ``layers``: a layer set (``all``, ``0-29``, ``0,5,10``; default all); ``block_layers``: another set for
    attn / mlp sites. ``features_out``: also save the judged pairs' last-token states of the base and fine-tuned
    passes in the format of :func:`lorank.analyze.probes.probe` (``features_in=``): probes on the same pairs, free."""
    rs = subject.judged()
    rr = subject.reranker
    L = len(decoder_layers(rr.model))
    chosen = parse_layers(layers, L)
    chosen_blocks = parse_layers(block_layers, L) if block_layers is not None else None
    qids = select_queries(rs, depth, max_queries, seed, rel_threshold, need_both=True)
    pairs = encode_pairs(rr.encoder, rs, select_pairs(rs, qids, depth, judged_only=False))
    configs = sweep_configs(L, chosen, list(sites), exact_check, chosen_blocks)
    tick = progress("patch", len(pairs.seqs) * (len(configs) + 2)) if progress else None
    ps = patch_scores(rr.model, pairs.seqs, int(rr.tokenizer.pad_token_id), configs, batch_tokens,
                      rr.scorer.bf16, features_out is not None, tick)
    if features_out is not None and ps.features is not None:
        judged = [i for i, g in enumerate(pairs.grades) if g is not None]
        save_features(features_out, {s: (ps.features[s][judged], ps.scores[s][judged]) for s in ("base", "finetuned")},
                      np.array([int(pairs.grades[i] >= rel_threshold) for i in judged]),
                      [pairs.keys[i] for i in judged],
                      {"adapter": subject.checkpoint, "eval_set": rs.name, "qids": qids,
                       "depth": depth, "rel_threshold": rel_threshold, "source": "patch (judged pairs)"})
    qrels_sub = {q: rs.qrels[q] for q in qids if q in rs.qrels}
    first = {q: rs.run[q] for q in qids}

    def ndcg(arr: np.ndarray) -> float:
        by_q: dict[str, dict[str, float]] = {}
        for (q, d), s in zip(pairs.keys, arr):
            by_q.setdefault(q, {})[d] = float(s)
        return evaluate(qrels_sub, rerank_to_run(by_q, first, depth), measures=["ndcg_cut_10"]).aggregate["ndcg_cut_10"]

    s_ft, s_base = ps.scores["finetuned"], ps.scores["base"]
    n_ft, n_base = ndcg(s_ft), ndcg(s_base)
    gap = float(np.linalg.norm(s_base - s_ft))
    rows = []
    for name, site_list in configs.items():
        s = ps.scores[name]
        v = ndcg(s)
        dist = float(np.linalg.norm(s - s_ft))
        kind, _, lay = name.partition("@")
        rows.append({"config": name, "site": kind if lay else name, "layer": int(lay) if lay else None,
                     "ndcg_cut_10": v, "restored_ndcg_pct": _restored(v, n_base, n_ft),
                     "restored_score_pct": 100.0 * (1 - dist / gap) if gap > 0 else None,
                     "max_abs_diff_vs_finetuned": float(np.max(np.abs(s - s_ft))),
                     "corr_with_finetuned": float(np.corrcoef(s, s_ft)[0, 1]) if np.std(s) > 0 else None})
    checks = {r["config"]: r["max_abs_diff_vs_finetuned"] for r in rows
              if r["config"] in ("all-blocks", f"layer@{L - 1}")}
    out = Path(out_dir) if out_dir is not None else Path(rr.meta.get("checkpoint", ".")) / "analysis"
    result: dict[str, Any] = {
        "kind": "patch", "adapter": subject.checkpoint, "eval_set": rs.name,
        "queries": len(qids), "qids": qids, "depth": depth, "pairs": len(pairs.keys), "num_layers": L,
        "sites": list(sites), "layers": chosen, "block_layers": chosen_blocks or chosen,
        "base": "same model, every LoRA delta off per LoraLayer (trained score head kept)",
        "ndcg_cut_10": {"base": n_base, "finetuned": n_ft, "gain": n_ft - n_base},
        "score_gap_l2": gap, "exactness_max_abs_diff": checks,
        "cost": {"wall_s": round(ps.wall_s, 2), "layer_calls": ps.layer_calls,
                 "naive_layer_calls": ps.naive_layer_calls,
                 "cost_fraction": round(ps.layer_calls / max(ps.naive_layer_calls, 1), 4)},
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "patch.json")}
    if plots:
        files["plot"] = str(plot_patching(result, out / "patch.png"))
    result["files"] = files
    atomic_write_json(out / "patch.json", result)
    return result


def plot_patching(res: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), constrained_layout=True)
    colors = {"layer": "tab:blue", "attn": "tab:orange", "mlp": "tab:green"}
    labels = {"layer": "whole layer output", "attn": "attention block only", "mlp": "MLP block only"}
    for ax, key, ylab in ((axes[0], "restored_ndcg_pct", "% of fine-tuned nDCG@10 gain restored"),
                          (axes[1], "restored_score_pct", "% of score distance closed (L2)")):
        for kind in SITE_KINDS:
            rows = sorted((r for r in res["rows"] if r["site"] == kind and r[key] is not None),
                          key=lambda r: r["layer"])
            if rows:
                ax.plot([r["layer"] for r in rows], [r[key] for r in rows], marker="o", ms=3.5,
                        color=colors[kind], label=labels[kind])
        ax.axhline(100, color="tab:blue", ls="--", lw=1, label="fine-tuned (100%)")
        ax.axhline(0, color="grey", ls=":", lw=1, label="base, LoRA off (0%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("patched decoder layer l (fine-tuned activation written into the base run)")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    n = res["ndcg_cut_10"]
    axes[0].set_title(f"Ranking: nDCG@10 base {n['base']:.3f} → fine-tuned {n['finetuned']:.3f}", fontsize=10)
    axes[1].set_title("Scores: 100·(1 − ‖s_patched − s_ft‖ / ‖s_base − s_ft‖)", fontsize=10)
    fig.suptitle(f"Activation patching on {res['eval_set']}: {res['queries']} queries x top {res['depth']} "
                 f"({res['pairs']} pairs)", fontsize=11)
    return save_figure(fig, out)
