"""The opening of ``lorank demo``'s report: what a reader should take away, the reference reranker against BM25,
and the committed CPU studies' findings.

Every sentence and number here is generated from the demo's figures (``OUT/demo_figures.json``, written by
:func:`lorank.demo.demo_figures` from the study folder, the adapter's ``metrics.json`` and the committed studies'
``findings.json``); nothing is typed in. A figure that is missing (a step not run, a study without findings yet)
is said to be missing."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from lorank.ablate.windows import PAPER_WINDOW, config_window, paper_window_text, parse_window, window_config
from lorank.evaluation.stats import fmt_p
from lorank.plotting import pyplot, save_figure
from lorank.report.findings import _sets, summary
from lorank.report.page import Section, fmt

ROLE_NOTE = {"dev": "a dev set under the protocol: it chose the adapter's recipe and checkpoint, so its figures show "
                    "the adapter at work, not how well it generalises",
             "test": "a test set: scored once on the frozen adapter, nothing chosen on it"}


def opening_sections(fig: dict[str, Any], out: Path) -> list[Section]:
    """The sections the demo's report opens with: the takeaways and the reranker against BM25 (its figure in `out`)."""
    return [takeaways_section(fig), reference_section(fig, out)]


def _p(p: Any) -> str:
    return f"p = {fmt_p(p)}"


def _vs_full(row: dict[str, Any]) -> str:
    """How an ablated configuration stands against the full adapter (the sweep's paired t-test, Holm)."""
    p, d = row.get("p_ndcg_cut_10"), row.get("delta_ndcg_cut_10") or 0.0
    if row.get("significant_ndcg_cut_10"):
        return f"significantly {'below' if d < 0 else 'above'} the full adapter, p<sub>Holm</sub> = {fmt_p(p)}"
    return f"not significantly different from the full adapter on this slice, p<sub>Holm</sub> = {fmt_p(p)}"


def _rec(row: dict[str, Any]) -> str:
    r = row.get("recovered_ndcg_cut_10")
    return "-" if r is None else f"{r:.0f}%"


def _rows(fig: dict[str, Any], sweep: str) -> dict[str, dict[str, Any]]:
    return {r["config"]: r for r in (fig.get("dissection", {}).get(sweep) or {}).get("rows", [])}


def vs_bm25_text(fig: dict[str, Any]) -> str:
    """The takeaway on the reranker against BM25: the slice's paired test, then the adapter's committed test figures."""
    sl, who = fig.get("slice_vs_bm25"), html.escape(fig["adapter"]["folder"])
    if not sl:
        return f"<b>The reference reranker</b> ({who}) was not scored: its ablation step has not run."
    t = sl["tests"]["ndcg_cut_10"]
    verdict = ("beats BM25 significantly" if t["significant"] and t["delta"] > 0 else "is significantly below BM25"
               if t["significant"] else "is not significantly different from BM25")
    text = (f"<b>The reference reranker {verdict} on this slice.</b> {who} reranks the BM25 top-{sl['depth']} of the "
            f"first {sl['queries']} judged {sl['eval_set'].upper()} queries ({sl['role']}: "
            f"{ROLE_NOTE.get(sl['role'], sl['role'])}): nDCG@10 {t['reranker']:.3f} against BM25's {t['bm25']:.3f}, "
            f"{t['delta']:+.3f} (95% CI {t['ci95'][0]:+.3f} to {t['ci95'][1]:+.3f}), paired t-test {_p(t['p'])}.")
    tests = [r for r in fig.get("adapter_committed", []) if r["role"] == "test"]
    if tests:
        text += (" On the test sets, scored once on the frozen adapter (its committed <code>metrics.json</code>, "
                 "every query, top 100): " + "; ".join(
                     f"{r['eval_set'].upper()} over {r['first_stage'].upper()}: {r['reranker']:.3f} against "
                     f"{r['baseline']:.3f}, {r['delta']:+.3f}, {_p(r['p'])}" for r in tests) + ".")
    return text


def components_text(fig: dict[str, Any]) -> str:
    """The takeaways on LoRA off and MHA vs MLP (the components sweep)."""
    rows, d = _rows(fig, "components"), fig.get("dissection", {}).get("components")
    if not rows or "mha-only" not in rows or "mlp-only" not in rows:
        return "<b>MHA vs MLP</b>: the components ablation has not run."
    full, none, mha, mlp = rows["full"], rows["none"], rows["mha-only"], rows["mlp-only"]
    text = (f"<b>The gain is in the LoRA deltas.</b> With all of them off (the base model with the trained score "
            f"head) the adapter scores {none['ndcg_cut_10']:.3f} against its {full['ndcg_cut_10']:.3f} "
            f"({_vs_full(none)}; {html.escape(d['where'])}). ")
    text += (f"<b>MHA vs MLP:</b> the attention deltas alone keep {_rec(mha)} of the gain over LoRA off "
             f"(nDCG@10 {mha['ndcg_cut_10']:.3f}, {_vs_full(mha)}); the MLP deltas alone keep {_rec(mlp)} "
             f"({mlp['ndcg_cut_10']:.3f}, {_vs_full(mlp)}).")
    if not mha.get("significant_ndcg_cut_10") and mlp.get("significant_ndcg_cut_10") and mlp["delta_ndcg_cut_10"] < 0:
        text += (" So the attention deltas alone cannot be told from the whole adapter here; the MLP deltas alone "
                 "fall short.")
    return text


def windows_text(fig: dict[str, Any]) -> str:
    """The takeaway on the layer windows (each window's deltas kept alone)."""
    rows, d = _rows(fig, "layer-windows"), fig.get("dissection", {}).get("layer-windows")
    wins = [r for k, r in rows.items() if k.startswith("only L")]
    if not wins:
        return "<b>Layer windows</b>: the layer-windows ablation has not run."
    below = [r for r in wins if r.get("significant_ndcg_cut_10") and r["delta_ndcg_cut_10"] < 0]
    best = max(wins, key=lambda r: r["ndcg_cut_10"])
    name = lambda r: html.escape(r["config"].removeprefix("only "))  # noqa: E731
    spans = [s for s in (config_window(r["config"]) for r in wins) if s]
    widths = sorted({hi - lo + 1 for lo, hi in spans})
    width = f"{widths[0]}-layer " if len(widths) == 1 else ""
    verb = "is" if len(below) == 1 else "are"
    text = (f"<b>Layer windows</b> ({html.escape(d['where'])}): of the {len(wins)} {width}windows kept alone, "
            f"{len(below)} {verb} significantly below the full adapter (p<sub>Holm</sub> &lt; 0.05)")
    if len(below) == len(wins):
        text += ": no window carries the whole gain."
    else:
        text += "; not shown below it here: " + ", ".join(
            f"{name(r)} (p<sub>Holm</sub> = {fmt_p(r['p_ndcg_cut_10'])})" for r in wins if r not in below) + "."
    text += (" The share of the gain each keeps: " + ", ".join(f"{name(r)} {_rec(r)}" for r in wins)
             + f"; the best is {name(best)}.")
    target = parse_window(d.get("target_window", PAPER_WINDOW), "the layer-windows figures' target_window")
    if window_config(target) in rows and best["config"] != window_config(target):
        n_layers = max(hi for _, hi in spans) + 1
        paper = paper_window_text(target)
        text += f" {paper[0].upper()}{paper[1:]} are not the best window of this model's {n_layers} layers."
    return text


def committed_text(fig: dict[str, Any]) -> list[str]:
    """The takeaways on the committed studies: their verdicts (findings.json as committed), or how far they are."""
    out = []
    for key, cs in fig.get("committed_studies", {}).items():
        where = f"<code>{html.escape(cs['dir'])}</code>"
        st = cs.get("state") or {}
        if not cs.get("exists"):
            out.append(f"The committed study {where} is not in this checkout.")
        elif cs.get("findings"):
            fs = cs["findings"]
            verdicts, dev = _by_verdict(fs, "verdict"), _by_verdict(fs, "verdict_dev")
            no_test = all(not (f.get("sets") and f.get("role") in ("test", "dev+test")) for f in fs)
            out.append(f"<b>The committed study {html.escape(st.get('name') or key)}</b> ({where}, its "
                       f"<code>findings.json</code> as committed; the section below): the paper's {len(fs)} findings, "
                       f"decided on the test sets: {verdicts}"
                       + (" (it has no test-set evaluation, so none can be decided)" if no_test else "")
                       + f". On the dev sets alone, which chose its recipe: {dev}.")
        else:
            seeds = f" ({st['seeds']} seeds a condition)" if st.get("seeds") else ""
            out.append(f"<b>The study {html.escape(st.get('name') or key)}</b>{seeds} is still running: its committed "
                       f"snapshot {where} holds {st.get('runs_done', 0)} of its {st.get('runs_planned', '?')} training "
                       f"runs (state {html.escape(str(st.get('status')))}, {html.escape(str(st.get('updated')))}) and "
                       "no findings yet.")
    return out


def _by_verdict(findings: list[dict[str, Any]], key: str) -> str:
    """'holds: 1; does not hold: 2, 4; inconclusive: 3, 5' (findings grouped by their verdict under `key`)."""
    groups: dict[str, list[str]] = {}
    for f in findings:
        groups.setdefault(str(f.get(key) or "-"), []).append(str(f["finding"]))
    if len(groups) == 1:
        return f"{'all ' if len(findings) > 1 else ''}{next(iter(groups))}"
    return "; ".join(f"{v}: {', '.join(n)}" for v, n in groups.items())


def smoke_text(fig: dict[str, Any]) -> str:
    runs = fig.get("smoke_training") or []
    if not runs:
        return "No training run in this demo."
    r = runs[0]
    ev = r.get("eval") or {}
    labels = ", ".join(html.escape(x["label"] or x["run_id"]) for x in runs)
    return (f"<b>Training ran as a smoke check only</b> ({labels}: "
            f"{r['max_steps']} steps on {', '.join(map(str, r['data']))} judged pairs, evaluated on "
            f"{ev.get('max_queries') or 'all'} {'/'.join(ev.get('sets') or [])} queries x top-{ev.get('depth')}): it "
            "shows that training, its checkpoints and their evaluation run end to end, not what training reaches "
            "(the committed study's finding 1 does).")


def takeaways_section(fig: dict[str, Any]) -> Section:
    items = [vs_bm25_text(fig), components_text(fig), windows_text(fig), *committed_text(fig), smoke_text(fig)]
    return Section("What to take away", "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")


def reference_section(fig: dict[str, Any], out: Path) -> Section:
    """The reranker against BM25: on the demo's slice (a table and the per-query figure), and the adapter's committed
    figures with their roles."""
    who = fig["adapter"].get("describe") or fig["adapter"]["folder"]
    sec = Section("The reference reranker vs BM25", html.escape(who) + ". The slice's figures pair the adapter's "
                  "unablated run from the components ablation with BM25's run of the same queries; the rest of "
                  "the candidate list stays in BM25's order below the reranked top.")
    sl = fig.get("slice_vs_bm25")
    if sl:
        names = {"ndcg_cut_10": "nDCG@10", "recip_rank_10": "MRR@10 (rel ≥ 2)"}
        rows = [[names[m], fmt(t["bm25"]), fmt(t["reranker"]),
                 f"{t['delta']:+.4f} ({t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f})", fmt_p(t["p"]), str(t["n_queries"])]
                for m, t in sl["tests"].items()]
        sec.tables.append((f"{sl['eval_set'].upper()} ({sl['role']}), the first {sl['queries']} judged queries x BM25 "
                           f"top-{sl['depth']}: {sl['test']}", ["measure", "BM25", "reranker", "Δ (95% CI)",
                                                                "p (Holm)", "queries"], rows))
        sec.images.append((f"Per query: BM25 and the reranker on {sl['eval_set'].upper()} ({sl['role']})",
                           vs_bm25_figure(sl, out / "reference_vs_bm25.png")))
    committed = fig.get("adapter_committed") or []
    if committed:
        sec.tables.append(("The adapter's committed figures (its metrics.json: every query, the first stage's top "
                           "100; dev sets chose its recipe and checkpoint, test sets were scored once on the frozen "
                           "adapter)", ["set", "role", "first stage", "reranker nDCG@10", "first stage nDCG@10",
                                        "Δ (95% CI)", "p"],
                           [[r["eval_set"], r["role"], r["first_stage"], fmt(r["reranker"], 3), fmt(r["baseline"], 3),
                             f"{r['delta']:+.3f}" + (f" ({r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f})" if r.get("ci95")
                                                      else ""), fmt_p(r["p"])] for r in committed]))
    return sec


def vs_bm25_figure(sl: dict[str, Any], out: Path) -> Path:
    """Each query's nDCG@10 under BM25 and under the reranker (a line from one to the other, sorted by the change),
    with both means and the test in the title."""

    plt = pyplot()
    pq = sorted(sl["per_query_ndcg_cut_10"].items(), key=lambda kv: kv[1][1] - kv[1][0])
    t = sl["tests"]["ndcg_cut_10"]
    fig, ax = plt.subplots(figsize=(max(6.5, 0.32 * len(pq) + 2.5), 4.2), constrained_layout=True)
    xs = range(len(pq))
    for x, (_, (b, r)) in zip(xs, pq):
        ax.plot([x, x], [b, r], color="tab:green" if r > b else "tab:red" if r < b else "grey", lw=1.6)
    ax.scatter(xs, [v[0] for _, v in pq], color="grey", zorder=3, s=22, label=f"BM25 (mean {t['bm25']:.3f})")
    ax.scatter(xs, [v[1] for _, v in pq], color="tab:blue", zorder=3, s=22,
               label=f"reranker (mean {t['reranker']:.3f})")
    ax.set_xticks(list(xs), [q for q, _ in pq], rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("query (sorted by the reranker's change)")
    ax.set_ylabel("nDCG@10")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"The reference reranker against BM25: {sl['eval_set'].upper()} ({sl['role']}), {sl['queries']} "
                 f"queries x BM25 top-{sl['depth']}\n{t['delta']:+.3f} nDCG@10 (95% CI {t['ci95'][0]:+.3f} to "
                 f"{t['ci95'][1]:+.3f}), paired t-test p = {fmt_p(t['p'])}", fontsize=9.5)
    return save_figure(fig, out)


def committed_findings_section(fig: dict[str, Any]) -> Section:
    """The committed studies' findings, as their findings.json says (never recomputed here), or how far a study is."""

    sec = Section("The committed CPU study's findings", "The paper's five findings tested by the CPU study at 135M, "
                  "read from the committed snapshot (not recomputed by the demo). A verdict is decided on the test "
                  "sets; the dev sets, which chose the recipe, are shown beside it (docs/protocol.md).")
    for key, cs in (fig.get("committed_studies") or {}).items():
        name = (cs.get("state") or {}).get("name") or key
        if cs.get("findings"):
            sec.tables.append((f"{name} ({cs['dir']}/findings.json)", ["#", "the paper's claim", "verdict (test)",
                                                                       "on dev", "the figures behind it"],
                               [[str(f["finding"]), f["claim"], f"{f['verdict']} ({_sets(f, 'test') or 'no test set'})",
                                 f"{f.get('verdict_dev') or '-'} ({_sets(f, 'dev')})", summary(f)]
                                for f in cs["findings"]]))
    running = [t for t in committed_text(fig) if "still running" in t or "not in this checkout" in t]
    if running:
        sec.text += " " + " ".join(running)
    return sec
