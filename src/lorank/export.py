"""Export a trained checkpoint as a self-contained reference adapter (``adapters/<name>/``).

The folder holds what a user needs to rerank with and dissect a real reranker without training one:

- ``adapter_model.safetensors`` + ``adapter_config.json``: the PEFT adapter (LoRA and the score head; the base
  named by its hub id, so PEFT finds it on another machine), LoRA
  weights in bf16 by default (half the size; the score head stays fp32), loadable by
  ``lorank rerank --adapter DIR`` and ``lorank.Reranker.from_adapter(DIR)``;
- ``lorank_meta.json``: base model (lorank's name, hub id, GGUF source), input template, LoRA spec, head init, pad
  id (what loading needs);
- ``training_config.json``: the run's fully resolved config (recipe, data, versions, precision);
- ``metrics.json``: the checkpoint's evaluations (``metrics.jsonl`` rows of its step) and, for every evaluation
  set that resolves by name and whose reranked TREC run the checkpoint evaluation wrote, the first stage's figures
  and paired t-tests (one per measure) of the reranked run against it (``vs_first_stage``; a set that cannot be compared is
  listed with the reason, not left out);
- ``README.md``: a Hub model card (:mod:`lorank.model_card`): what it is, its figures, the exact input encoding
  with a transformers + PEFT snippet that reproduces lorank's scores without lorank, its limits.

With ``--merged`` (:func:`export_merged`) the folder is instead a plain transformers model: the LoRA merged into
the base, loadable by ``AutoModelForSequenceClassification.from_pretrained``.

The folder is written to a temporary sibling and renamed into place, so it is complete or absent.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorank.adapters import (IDENTITY, adapter_identity, content_hash, read_adapter_state, read_checkpoint_meta,
                             read_peft_config)
from lorank.atomic import atomic_dir, atomic_write_json, atomic_write_text
from lorank.data import load_run, resolve_eval_set
from lorank.data.roles import role_of
from lorank.data.sources import eval_label
from lorank.errors import ConfigError, DataError
from lorank.evaluation import compare, evaluate
from lorank.evaluation.stats import boot_means, fmt_p, percentile_ci
from lorank.layout.adapter import (BOS_KEY, EXPORT_METRICS, export_meta_file, export_metrics_file,
                                   peft_config_file, training_config_file, weights_file)
from lorank.layout.checkpoints import latest_checkpoint, step_of
from lorank.layout.run import (METRICS, TREC_CHECKPOINT, TREC_DIR, config_file, metrics_file, read_metrics,
                               trec_run_file)

MAX_BYTES = 10 * 1024 * 1024


def encoder_prefix(base: str) -> list[int]:
    """The ids lorank's :class:`~lorank.models.inputs.PairEncoder` puts before every pair for ``base``: what its
    tokenizer adds in front of a text (Gemma: ``<bos>``; none for SmolLM2)."""
    from lorank.errors import ModelNotFoundError
    from lorank.models.inputs import PairEncoder
    from lorank.models.loading import load_tokenizer

    try:
        tok = load_tokenizer(base)
    except (ModelNotFoundError, OSError) as e:
        raise ConfigError(f"cannot load the tokenizer of the base model {base!r} ({e}): the export records the token "
                          "ids lorank puts before every pair (its BOS, if any) for the model card; install the base "
                          "(lorank models) and export again") from e
    return [int(i) for i in PairEncoder(tok).bos]


def _state_for_export(state: dict[str, Any], dtype: str) -> dict[str, Any]:
    import torch

    if dtype not in ("bf16", "fp32"):
        raise ConfigError(f"export dtype must be bf16 or fp32, got {dtype!r}")
    target = torch.bfloat16 if dtype == "bf16" else torch.float32
    out = {}
    for k, v in state.items():
        # LoRA factors may be rounded; the score head is tiny and sets the score's scale: kept fp32
        out[k] = v.to(target).contiguous() if ("lora_" in k and v.is_floating_point()) else v.contiguous()
    return out


def export_adapter(checkpoint: str | Path, out: str | Path, dtype: str = "bf16", name: str | None = None,
                   commands: dict[str, str] | None = None, extra_metrics: dict[str, Any] | None = None,
                   overwrite: bool = False, note: str | None = None, data_root: str | Path | None = None,
                   evaluations: str | Path | None = None, card_extra: str | None = None) -> Path:
    """Write ``out`` from a lorank checkpoint (or run folder: its last complete checkpoint), or from an exported
    adapter (to re-export it with other evaluations, or in today's portable form). ``evaluations``: the folder whose
    ``metrics.jsonl`` and ``runs_trec/`` hold this step's evaluations (default: the checkpoint's run folder), e.g.
    ``RUN/eval-top100`` written by ``benchmarks/train_msmarco12k.py --headline-step``; an exported adapter re-exported
    without it keeps its ``metrics.json`` as it is. The training config is the run folder's ``config.json``, else the
    adapter's own ``training_config.json``. ``card_extra``: Markdown sections appended to the model card.

    ``adapter_config.json`` names the base by its hub id (``base_model_name_or_path``), ``lorank_meta.json`` keeps
    lorank's name for it and its GGUF source. A re-export of an exported adapter that keeps its weights' tensors
    keeps its identity (:func:`lorank.adapters.adapter_identity`), so the studies that dissected it stay valid."""
    from safetensors.torch import save_file

    ckpt = latest_checkpoint(checkpoint)
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists: choose another folder or pass overwrite=True (--overwrite)")
    meta = read_checkpoint_meta(ckpt)
    peft_cfg = read_peft_config(ckpt)
    exported = export_meta_file(ckpt).is_file()  # the source is itself an exported adapter
    src_state = read_adapter_state(ckpt)
    state = _state_for_export(src_state, dtype)
    keep = _export_meta(meta, ckpt, name or out.name, dtype, exported)
    metrics, run_cfg = _export_metrics(ckpt, keep["step"], evaluations, data_root, exported, commands, note,
                                       extra_metrics)
    # the re-export keeps the identity of the folder it came from when the model computes the same: same tensors
    same = exported and set(state) == set(src_state) and all(
        state[k].dtype == src_state[k].dtype and bool((state[k] == src_state[k]).all()) for k in state)
    identity = adapter_identity(ckpt) if same else None
    with atomic_dir(out) as tmp:
        save_file(state, str(weights_file(tmp)), metadata={"format": "pt"})
        atomic_write_text(peft_config_file(tmp), json.dumps(portable_peft_config(peft_cfg, keep), indent=2,
                                                            sort_keys=True))
        atomic_write_json(export_meta_file(tmp), keep)
        if identity is not None:
            keep[IDENTITY] = {"hash": identity, "content": content_hash(tmp),
                              "why": "re-exported with the same weights (portable base, model card): the studies "
                                     "that dissected the adapter follow this identity"}
            atomic_write_json(export_meta_file(tmp), keep)
        if run_cfg is not None:
            atomic_write_json(training_config_file(tmp), run_cfg)
        atomic_write_json(export_metrics_file(tmp), metrics)
        atomic_write_text(tmp / "README.md", _card(keep, metrics, run_cfg, dtype, card_extra))
        size = sum(f.stat().st_size for f in tmp.iterdir())
        if size > MAX_BYTES:
            raise ConfigError(f"the exported adapter is {size / 2**20:.1f} MiB, over the {MAX_BYTES // 2**20} MiB meant "
                              "for a shipped reference adapter (export in bf16, or a lower rank)")
    return out


def _export_meta(meta: dict[str, Any], ckpt: Path, name: str, dtype: str, exported: bool) -> dict[str, Any]:
    """lorank_meta.json of the export: what loading needs, the base's hub id and GGUF source, the ids lorank's
    encoder puts before every pair (the base tokenizer's BOS, where it adds one: the model card's encoding needs
    them), the provenance (a re-export keeps where the adapter was first exported from, and its step)."""
    from lorank.models.source import gguf_source, hub_id_for

    keep = {k: meta[k] for k in ("base_model", "input", "lora", "head_init", "pad_token_id", BOS_KEY) if k in meta}
    base = meta.get("base_model")
    if BOS_KEY not in meta and base:
        bos = encoder_prefix(base)
        if bos:  # Gemma: [<bos>]; SmolLM2 has none, and its metadata stays as it was
            keep[BOS_KEY] = bos
    hub_id = hub_id_for(base) if base else None
    if hub_id:
        keep["base_model_hub_id"] = hub_id
    source = gguf_source(base) if base else None
    if source:
        keep["base_model_source"] = source
    step = meta.get("step")
    if step is None:
        step = step_of(ckpt)
    keep.update({"dtype": "auto", "weights_dtype": dtype,
                 "exported_from": str(meta["exported_from"]) if exported and meta.get("exported_from") else str(ckpt),
                 "step": step, "name": name})
    return keep


def portable_peft_config(cfg: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """``adapter_config.json`` as another machine can use it: the base named by its hub id (not a path into this
    machine's cache; a local folder's path is kept, there being no other name), ``modules_to_save`` without
    duplicates."""
    out = dict(cfg)
    base = meta.get("base_model_hub_id")
    if base is None and meta.get("base_model") and not Path(str(meta["base_model"])).is_absolute():
        base = meta["base_model"]
    if base:
        out["base_model_name_or_path"] = base
    if isinstance(out.get("modules_to_save"), list):
        out["modules_to_save"] = list(dict.fromkeys(out["modules_to_save"]))
    return out


def _export_metrics(ckpt: Path, step: Any, evaluations: str | Path | None, data_root: str | Path | None,
                    exported: bool, commands: dict[str, str] | None, note: str | None,
                    extra_metrics: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(metrics.json, the run's resolved config) of an export: the step's evaluations with the first stage's figures
    and tests; an exported adapter re-exported without ``evaluations`` keeps its metrics.json."""
    from lorank.data.sources import eval_label

    cfg_file = next((f for f in (config_file(ckpt.parent), training_config_file(ckpt)) if f.is_file()), None)
    run_cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file is not None else None
    if exported and evaluations is None and export_metrics_file(ckpt).is_file():
        metrics = json.loads(export_metrics_file(ckpt).read_text(encoding="utf-8"))
        if commands:
            metrics.setdefault("commands", {}).update(commands)
        if note:
            metrics["note"] = note
        return {**metrics, **(extra_metrics or {})}, run_cfg
    run_dir = Path(evaluations) if evaluations is not None else ckpt.parent
    if evaluations is not None and not metrics_file(run_dir).is_file():
        raise ConfigError(f"{run_dir}: no {METRICS} (the evaluations folder holds {METRICS} and {TREC_DIR}/)")
    rows = [r for r in read_metrics(run_dir) if r.get("step") == step]
    if evaluations is not None and not rows:
        raise ConfigError(f"{metrics_file(run_dir)} has no evaluation of step {step}")
    eval_sets = ((run_cfg or {}).get("config") or {}).get("eval", {}).get("sets") or []
    vs = vs_first_stage(run_dir, step, rows, data_root, {eval_label(s): s for s in eval_sets}) if rows else {}
    return {"step": step, "evaluations": rows, "vs_first_stage": vs, **(extra_metrics or {}),
            "commands": commands or {}, **({"note": note} if note else {})}, run_cfg


def _card(meta: dict[str, Any], metrics: dict[str, Any], run_cfg: dict[str, Any] | None, dtype: str,
          extra: str | None, merged: bool = False) -> str:
    from lorank.model_card import model_card

    table = metrics_table(metrics) if metrics.get("evaluations") else None
    return model_card(meta, table, run_cfg, metrics.get("commands") or {}, dtype, metrics.get("note"), merged, extra)


def export_merged(source: str | Path, out: str | Path, dtype: str = "bf16", overwrite: bool = False,
                  card_extra: str | None = None) -> Path:
    """Write ``out`` as a plain transformers model folder: the adapter's LoRA merged into its base, the score head,
    the tokenizer with lorank's pad token, ``config.pad_token_id`` set, lorank's metadata and metrics, and a model
    card. ``AutoModelForSequenceClassification.from_pretrained(out)`` scores like lorank (encoding as the card
    says); ``dtype``: the saved weights' (bf16: half the size)."""
    import torch

    from lorank.adapters import read_checkpoint_meta
    from lorank.atomic import atomic_dir, atomic_write_json, atomic_write_text
    from lorank.reranker import Reranker

    if dtype not in ("bf16", "fp32"):
        raise ConfigError(f"export dtype must be bf16 or fp32, got {dtype!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists: choose another folder or pass overwrite=True (--overwrite)")
    ckpt = latest_checkpoint(source)
    meta = read_checkpoint_meta(ckpt)
    keep = _export_meta(meta, ckpt, out.name, dtype, export_meta_file(ckpt).is_file())
    keep["merged"] = True
    metrics, run_cfg = _export_metrics(ckpt, keep["step"], None, None, export_meta_file(ckpt).is_file(), None,
                                       None, None)
    rr = Reranker.from_adapter(ckpt, dtype="fp32", device="cpu")
    model = rr.model.merge_and_unload()
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    model.config.pad_token_id = int(rr.tokenizer.pad_token_id)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        rr.tokenizer.save_pretrained(tmp)
        atomic_write_json(export_meta_file(tmp), keep)
        if run_cfg is not None:
            atomic_write_json(training_config_file(tmp), run_cfg)
        atomic_write_json(export_metrics_file(tmp), metrics)
        atomic_write_text(tmp / "README.md", _card(keep, metrics, run_cfg, dtype, card_extra, merged=True))
    return out


MEASURES = ("ndcg_cut_10", "recip_rank_10")


def vs_first_stage(run_dir: Path, step: Any, rows: list[dict[str, Any]], data_root: str | Path | None = None,
                   sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Per evaluation set of ``rows``: the first stage's figures and paired t-tests (Holm per measure) of the
    checkpoint's reranked TREC run against it. ``sources`` maps a row's label to the set's name or folder (the
    run's ``eval.sets``); other labels are looked up as names. A set that cannot be compared gets
    ``{"skipped": reason}``."""
    sources = sources or {}
    out: dict[str, Any] = {}
    for label in dict.fromkeys(r["eval_set"] for r in rows):
        f = trec_run_file(run_dir, TREC_CHECKPOINT, step, label)
        if not f.is_file():
            out[label] = {"skipped": f"no reranked run {f} (written by the checkpoint evaluation with write_runs)"}
            continue
        try:
            rs = resolve_eval_set(sources.get(label, label), data_root)
        except (DataError, FileNotFoundError) as e:
            out[label] = {"skipped": f"the evaluation set {label!r} does not resolve by name: {e}"}
            continue
        out[label] = one_vs_first_stage(rs, load_run(f))
    return out


def one_vs_first_stage(rs: Any, reranked: Any) -> dict[str, Any]:
    """The first stage's figures and paired t-tests of `reranked` against it, one per measure (nothing to adjust
    within a measure; none across the two: nDCG@10 is the primary one), with the 95% bootstrap CI of each difference
    (over queries). ``rs``: an evaluation set (``qrels``, ``run``: the first
    stage, ``name``: the bootstrap's key), or several pooled (:func:`lorank.after_training.pooled_vs_first_stage`)."""
    cmp = compare(rs.qrels, {"first_stage": rs.run, "reranked": reranked}, baseline="first_stage",
                  measures=list(MEASURES))
    first, rr = cmp.results["first_stage"], cmp.results["reranked"]  # compare evaluated both: no second pass
    tests = []
    for c in cmp.comparisons:
        d = c.to_dict()
        a, b = rr.per_query[c.measure], first.per_query[c.measure]
        qids = sorted(set(a) & set(b))
        boots = boot_means([{"r": a}, {"f": b}], qids, 2000, f"{rs.name}:{c.measure}")
        lo, hi = percentile_ci(boots[:, 0] - boots[:, 1])
        d["ci95"] = [round(lo, 4), round(hi, 4)]
        d["n_queries"] = len(qids)
        tests.append(d)
    return {"first_stage": {k: round(float(v), 4) for k, v in first.aggregate.items()}, "tests": tests}


def record_evaluations(adapter: str | Path, runs: dict[str, str | Path], data_root: str | Path | None = None,
                       depth: int = 100, command: str | None = None, precision: str | None = None) -> dict[str, Any]:
    """Add evaluations of a frozen, exported adapter to its ``metrics.json``, each with its role under the
    protocol (:func:`lorank.data.roles.role_of`: DL22 and DL22-SPLADE are test, DL19/DL20 dev): ``runs`` maps an
    evaluation set (name or folder) to the adapter's reranked TREC run on it (``lorank rerank --adapter``). For each:
    the reranked run's figures (an ``evaluations`` row), and the first stage's with paired t-tests and 95% CIs
    (``vs_first_stage``). Rows already there for the same set are replaced; the rows without a role (written before
    roles existed) get theirs. Written atomically; returns the new metrics."""
    adapter = Path(adapter)
    f = export_metrics_file(adapter)
    if not f.is_file():
        raise ConfigError(f"{adapter}: no {EXPORT_METRICS} (not an exported adapter: lorank export-adapter writes one)")
    metrics = json.loads(f.read_text(encoding="utf-8"))
    evals = metrics.setdefault("evaluations", [])
    vs = metrics.setdefault("vs_first_stage", {})
    for row in evals:
        row.setdefault("role", role_of(row["eval_set"]))
    for label, v in vs.items():
        v.setdefault("role", role_of(label))
    for name, run_file in runs.items():
        rs = resolve_eval_set(str(name), data_root)
        label = eval_label(str(name))
        reranked = load_run(run_file)
        missing = sorted(set(rs.run) - set(reranked))
        if missing:
            raise DataError(run_file, None, f"the reranked run lacks {len(missing)} of {label}'s queries "
                                             f"(e.g. {missing[0]}): rerank the whole set")
        res = evaluate(rs.qrels, reranked)
        row = {"step": metrics.get("step"), "eval_set": label, "role": role_of(label),
               **{k: round(float(x), 6) for k, x in res.aggregate.items()},
               "pairs": sum(min(len(v), depth) for v in rs.run.values()), "depth": depth,
               "first_stage": "splade++" if "splade" in label else "bm25"}
        if precision:
            row["precision"] = precision
        evals[:] = [r for r in evals if r["eval_set"] != label] + [row]
        vs[label] = {**one_vs_first_stage(rs, reranked), "role": row["role"]}
    if command:
        metrics.setdefault("commands", {})["evaluate (test)"] = command
    atomic_write_json(f, metrics)
    return metrics


_TABLE_HEAD = ("| set | role | first stage | nDCG@10 | first stage | delta (95% CI) | p | MRR@10 (rel >= 2) | "
               "first stage | p |")


def metrics_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """The cells of :func:`metrics_table`'s rows: dev sets first, then test, each with its first stage's figures and
    the paired t-test of the reranked run against it (the 95% CI of the nDCG@10 difference where recorded)."""
    vs = metrics.get("vs_first_stage") or {}
    rows = sorted(metrics.get("evaluations") or [], key=lambda r: ({"dev": 0, "test": 1}.get(
        r.get("role") or role_of(r["eval_set"]), 2), r["eval_set"]))
    out = []
    for r in rows:
        v = vs.get(r["eval_set"], {})
        fs = v.get("first_stage", {})
        tests = {t.get("measure"): t for t in v.get("tests", [])}
        nd, mr = tests.get("ndcg_cut_10", {}), tests.get("recip_rank_10", {})
        ci = nd.get("ci95")
        delta = (f"{nd['delta']:+.3f}" + (f" ({ci[0]:+.3f}, {ci[1]:+.3f})" if ci else "")) if "delta" in nd else "-"
        out.append([r["eval_set"], r.get("role") or role_of(r["eval_set"]), r.get("first_stage", "bm25"),
                    f"**{r.get('ndcg_cut_10', float('nan')):.3f}**", f"{fs['ndcg_cut_10']:.3f}" if fs else "-", delta,
                    fmt_p(nd.get("p_adjusted")) if nd else v.get("skipped", "-"),
                    f"{r.get('recip_rank_10', float('nan')):.3f}", f"{fs['recip_rank_10']:.3f}" if fs else "-",
                    fmt_p(mr.get("p_adjusted")) if mr else "-"])
    return out


def metrics_table(metrics: dict[str, Any]) -> str:
    """An adapter's evaluations as a Markdown table, each row with its set's role (dev: chose the recipe or the
    checkpoint; test: reported only), the first stage, and the paired t-test of the reranked run against it with the
    95% CI of the difference. The README's table of a shipped adapter is this text (``lorank readme``)."""
    lines = [_TABLE_HEAD, "|---|---|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in metrics_rows(metrics)]
    return "\n".join(lines)


def adapters_table(adapters: list[tuple[str, dict[str, Any]]]) -> str:
    """Several adapters' evaluations in one table (``lorank:adapters-table A,B``), a first column naming each
    (e.g. the reference rerankers of two model families side by side); each adapter's rows as in
    :func:`metrics_table`."""
    lines = ["| reranker " + _TABLE_HEAD, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, metrics in adapters:
        lines += [f"| {name} | " + " | ".join(cells) + " |" for cells in metrics_rows(metrics)]
    return "\n".join(lines)
