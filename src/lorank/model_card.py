"""The README of an exported adapter (or merged model) as a Hugging Face Hub model card.

A YAML header (``base_model``, ``library_name: peft``, tags, datasets, metrics), what the model is for, its dev and
test figures (the generated ``lorank:adapter-table`` block, rewritten from ``metrics.json`` by ``lorank readme``), the
exact input encoding, a plain transformers + PEFT snippet that reproduces lorank's scores without lorank, and its
limits. The snippet is generated from the adapter's own input format and pad id, and
``tests/test_adapter_portability.py`` runs it (from this text) against lorank's scores.
"""
from __future__ import annotations

from typing import Any

from lorank.layout.adapter import BOS_KEY
from lorank.models.source import LICENSES

#: the Hub's ids of the training sets lorank knows by kind
_DATASETS = {"msmarco": "microsoft/ms_marco"}


def _yaml_list(key: str, items: list[str]) -> list[str]:
    return [f"{key}:"] + [f"- {x}" for x in items]


def card_header(meta: dict[str, Any], training: dict[str, Any] | None, merged: bool) -> list[str]:
    """The YAML front matter the Hub reads."""
    data = ((training or {}).get("config") or {}).get("data") or []
    datasets = list(dict.fromkeys(_DATASETS[d["kind"]] for d in data if isinstance(d, dict) and d.get("kind")
                                  in _DATASETS))
    base = meta.get("base_model_hub_id") or meta.get("base_model")
    lines = ["---", f"base_model: {base}"]
    if not merged:
        lines.append("library_name: peft")
    else:
        lines.append("library_name: transformers")
    lines += ["pipeline_tag: text-classification", f"license: {LICENSES.get(base, 'other')}"]
    lines += _yaml_list("tags", ["lorank", "reranker", "passage-reranking", "cross-encoder", "lora"]
                        + (["merged"] if merged else ["peft"]))
    if datasets:
        lines += _yaml_list("datasets", datasets)
    lines += _yaml_list("metrics", ["ndcg", "mrr"])
    return lines + ["---", ""]


def input_encoding(meta: dict[str, Any]) -> list[str]:
    """The exact encoding, in words."""
    fmt = {"query_template": "query: {query}", "doc_template": " document: {title} {passage}", "max_len": 196,
           "query_max_len": 32, **(meta.get("input") or {})}
    bos = meta.get(BOS_KEY) or []
    n = 2 if bos else 1  # the query part's item
    return [
        "## Input encoding (exact)", "",
        "A (query, passage) pair is scored as one sequence, read at its last token by the 1-output score head:", "",
        *([f"1. the token ids {bos} first: what the base's tokenizer puts before a text (its BOS), once;",
           f"2. the query part `{fmt['query_template']}`, tokenized on its own **without special tokens** (the BOS is "
           f"step 1's), cut to its first {fmt['query_max_len']} tokens;"] if bos else
          [f"1. the query part `{fmt['query_template']}`, tokenized on its own **without special tokens** (no BOS), "
           f"cut to its first {fmt['query_max_len']} tokens;"]),
        f"{n + 1}. the document part `{fmt['doc_template']}` (without a title: "
        f"`{fmt['doc_template'].replace(' {title}', '')}`), tokenized on its own without special tokens, cut so that "
        f"the whole sequence is at most {fmt['max_len']} tokens;",
        f"{n + 2}. the tokenizer's EOS **id** appended (`tokenizer.eos_token_id`; not the text `</s>`, which the tokenizer "
        "splits into ordinary tokens).", "",
        f"Batches are right-padded with id {meta.get('pad_token_id', 0)} (`config.pad_token_id`): it differs from "
        "EOS, so transformers reads the score at the EOS token. Tokenizing the whole pair as one text, or writing "
        "`</s>` into it, gives other scores.", ""]


def plain_snippet(meta: dict[str, Any], where: str, merged: bool) -> list[str]:
    """Python that scores pairs as lorank does, with transformers (+ PEFT) only."""
    fmt = {"query_template": "query: {query}", "doc_template": " document: {title} {passage}", "max_len": 196,
           "query_max_len": 32, **(meta.get("input") or {})}
    base = meta.get("base_model_hub_id") or meta.get("base_model")
    pad = meta.get("pad_token_id", 0)
    bos = meta.get(BOS_KEY) or []  # the BOS lorank's encoder puts first (Gemma), or none (SmolLM2)
    load = ([f'MODEL = "{where}"', "tok = AutoTokenizer.from_pretrained(MODEL)",
             "model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=1, dtype=torch.float32)"]
            if merged else
            [f'BASE, ADAPTER = "{base}", "{where}"', "tok = AutoTokenizer.from_pretrained(BASE)",
             "base = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=1, dtype=torch.float32)",
             "model = PeftModel.from_pretrained(base, ADAPTER)"])
    q_tpl, d_tpl = fmt["query_template"], fmt["doc_template"]
    d_plain = d_tpl.replace(" {title}", "").replace("{title} ", "").replace("{title}", "")
    return ["```python", "import torch", "from transformers import AutoModelForSequenceClassification, AutoTokenizer"]\
        + ([] if merged else ["from peft import PeftModel"]) + [""] + load + [
        f"PAD = {pad}  # lorank's pad id: not EOS, so the score is read at the EOS token",
        "model.config.pad_token_id = PAD",
        "model.eval()", "",
        "",
        "def encode(query, passage, title=''):",
        f"    q = {bos} + tok({q_tpl!r}.format(query=query), add_special_tokens=False).input_ids[:{fmt['query_max_len']}]"
        if bos else
        f"    q = tok({q_tpl!r}.format(query=query), add_special_tokens=False).input_ids[:{fmt['query_max_len']}]",
        f"    doc = ({d_tpl!r}.format(title=title, passage=passage) if title",
        f"           else {d_plain!r}.format(passage=passage))",
        "    d = tok(doc, add_special_tokens=False).input_ids",
        f"    return q + d[:max({fmt['max_len']} - len(q) - 1, 1)] + [tok.eos_token_id]", "",
        "",
        "@torch.no_grad()",
        "def score(query, passages):",
        "    rows = [encode(query, p) for p in passages]",
        "    n = max(map(len, rows))",
        "    ids = torch.tensor([r + [PAD] * (n - len(r)) for r in rows])",
        "    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])",
        "    return model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()", "",
        "",
        "print(score('what is a flea', ['Fleas are small wingless insects that feed on the blood of mammals.',",
        "                               'The Rhine is a river that flows through Switzerland and Germany.']))",
        "```", ""]


def model_card(meta: dict[str, Any], table: str | None, training: dict[str, Any] | None, commands: dict[str, str],
               dtype: str, note: str | None = None, merged: bool = False, extra: str | None = None) -> str:
    """The whole card. ``table``: the dev/test table (:func:`lorank.export.metrics_table`), None without
    evaluations; ``extra``: hand-written Markdown sections kept at the end (e.g. an out-of-domain check)."""
    name = meta["name"]
    lora = meta.get("lora", {})
    hub = meta.get("base_model_hub_id")
    src = meta.get("base_model_source") or {}
    where = f"adapters/{name}"
    what = (f"A passage reranker: `{hub or meta.get('base_model')}` with a LoRA adapter (rank {lora.get('rank')}, "
            f"alpha {lora.get('alpha')}, components {lora.get('components')}, layers {lora.get('layers')}) and a "
            f"1-output score head, trained with lorank and exported from "
            f"`{meta['exported_from']}` (step {meta.get('step')})"
            + (f"; LoRA weights in {dtype}." if not merged else f"; merged into the base weights ({dtype})."))
    lines = card_header(meta, training, merged) + [f"# {name}", "", what, ""]
    if src.get("gguf_file"):
        lines += [f"The base it was trained on is lorank's dequantization of `{src['gguf_file']}` (Python package "
                  f"`{src.get('package')}`), a quantization of `{hub}`. `lorank models` places that dequantized "
                  f"model in the Hugging Face cache under `{hub}` (ref `main` when no download of the Hub model is "
                  "there, and always ref `lorank-gguf`), so the snippets below load it offline (`HF_HUB_OFFLINE=1`).",
                  ""]
    lines += ["## Intended use", "",
              "Reranking the top candidates of a first-stage retriever (e.g. BM25 top-100) for English web-search "
              "style queries over short passages (MS MARCO-like): higher score = more relevant. A score is "
              "comparable across passages of one query, not across queries. A research artifact of lorank: the "
              "reference reranker its studies dissect.", ""]
    if note:
        lines += [note.strip(), ""]
    if table:  # a generated block: `lorank readme README.md` rewrites it from metrics.json
        lines += ["## Evaluation", "",
                  "Dev figures chose the recipe or the checkpoint; test figures were scored once on the frozen "
                  "adapter and chose nothing. p: paired t-test against the first stage, each measure on its own "
                  "(nDCG@10 the primary one; no adjustment across the two); "
                  "delta with its 95% bootstrap CI over queries where the reranked run was kept.", "",
                  "<!-- lorank:adapter-table . -->", table, "<!-- /lorank:adapter-table -->", ""]
    lines += input_encoding(meta)
    lines += ["## Use with transformers" + ("" if merged else " + PEFT") + " (no lorank)", ""]
    lines += plain_snippet(meta, "." if merged else where, merged)
    lines += ["## Use with lorank", "", "```bash", f"lorank rerank --adapter {where} --eval dl19 --out dl19.run",
              f"lorank export-adapter {where} --out merged-{name} --merged   # a merged transformers model folder",
              "```", "", "```python", "import lorank", f"rr = lorank.Reranker.from_adapter('{where}')",
              "rr.score('what is a flea', ['Fleas are small insects ...', 'A river ...'])", "```", ""]
    lines += ["## Limits", "",
              f"- Trained on English MS MARCO passages at {(meta.get('input') or {}).get('max_len', 196)} tokens: "
              "longer passages are cut (lorank counts and reports the cut inputs); other domains and languages are "
              "not what it was made for (see the out-of-domain check below, where present).",
              f"- A small base model (`{hub or meta.get('base_model')}`): far below large rerankers; over a strong "
              "first stage (SPLADE++) it can lower nDCG@10 (see the table).",
              "- Its figures hold for lorank's base weights" + (f" (the dequantized `{src['gguf_file']}`)"
                                                                 if src.get("gguf_file") else "")
              + ". The Hub's original weights of the base are not the same numbers: with them the scores differ "
              "(by how much is not measured here); a merged folder (`--merged`) carries the exact weights.",
              "- Scored in bf16 (lorank's default where bf16 pays) the scores move by a few hundredths against fp32.",
              ""]
    if commands:
        lines += ["## How it was made", ""] + [f"- {k}: `{v}`" for k, v in commands.items()] + [""]
    lines += ["`training_config.json` holds the run's resolved config, `metrics.json` the evaluations, "
              "`lorank_meta.json` lorank's metadata (base model and its GGUF source, input format, LoRA spec).", ""]
    if extra:
        lines += [extra.strip(), ""]
    return "\n".join(lines)
