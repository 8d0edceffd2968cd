"""Check a study's grid figures by hand, without lorank's own evaluation code: per-query nDCG@10 from the runs'
TREC files with ir_measures, paired t-tests with scipy, Holm over the pairs asked for.

It reads each grid run's ``runs_trec/checkpoint-<step>.<set>.run`` (by default DL19 and DL20, pooled over their
judged queries; ``--sets dl22`` for the test set), BM25's top-k from the shared data, and prints every run's
checkpoints against BM25 and the pairs given, so that ``findings.json`` can be compared with numbers computed another
way. Seeds: the runs of one condition (names equal but for ``-s<seed>-<hash>``) are averaged per query before any
test, and their per-seed means printed; ``--margin M`` adds a TOST equivalence p-value per pair.

    .venv/bin/python benchmarks/findings_by_hand.py studies_out/paper-smollm2-cpu \\
        --pairs r1-all:r2-all r1-all:r8-all r1-all:r32-all r2-all:r8-all r2-all:r32-all r8-all:r32-all
    .venv/bin/python benchmarks/findings_by_hand.py studies_out/paper-smollm2-cpu-seeds --sets dl22 --margin 0.02 \\
        --pairs r1-all:r8-all
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import ir_measures
from ir_measures import nDCG
from scipy.stats import ttest_1samp, ttest_rel

FOLDERS = {"dl19": "trec-dl-2019", "dl20": "trec-dl-2020", "dl22": "trec-dl-2022"}
SETS = (("dl19", "trec-dl-2019"), ("dl20", "trec-dl-2020"))


def read_run(path: Path, top: int | None = None) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) < 5:
            raise SystemExit(f"{path}:{n}: not a TREC run line ({line!r})")
        run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    if top:
        run = {q: dict(sorted(d.items(), key=lambda x: -x[1])[:top]) for q, d in run.items()}
    return run


def per_query(run: dict[str, dict[str, float]], qrels: list) -> dict[str, float]:
    """nDCG@10 of each judged query of `qrels` (ir_measures Qrel records)."""
    judged = {q.query_id for q in qrels}
    return {m.query_id: m.value for m in ir_measures.iter_calc([nDCG @ 10], qrels, run) if m.query_id in judged}


def holm(pvalues: list[float]) -> list[float]:
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out, running = [0.0] * len(pvalues), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - k) * pvalues[i]))
        out[i] = running
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="a study folder (studies_out/NAME or its snapshot)")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--top", type=int, default=50, help="BM25 depth the study reranked (default 50)")
    ap.add_argument("--step", type=int, default=1000, help="the checkpoint the pairs compare (default 1000)")
    ap.add_argument("--pairs", nargs="*", default=[], help="A:B run names or their ends (r8-mha:r8-all), one "
                    "Holm family")
    ap.add_argument("--sets", default="dl19,dl20", help="the pooled sets: dl19,dl20 (dev, default) or dl22 (test)")
    ap.add_argument("--margin", type=float, default=None, help="also a TOST equivalence test of each pair within "
                    "+-MARGIN")
    a = ap.parse_args()
    sets = tuple((s, FOLDERS[s]) for s in a.sets.split(","))
    qrels = {s: list(ir_measures.read_trec_qrels(str(a.data / folder / "qrels.txt"))) for s, folder in sets}
    bm25: dict[str, float] = {}
    for s, folder in sets:
        pq = per_query(read_run(a.data / folder / "bm25.run", a.top), qrels[s])
        bm25.update({f"{s}:{q}": v for q, v in pq.items()})
    qs = sorted(bm25)
    mean = lambda d: sum(d[q] for q in qs) / len(qs)  # noqa: E731
    print(f"BM25 top-{a.top}: {mean(bm25):.4f} over {len(qs)} judged queries")
    seeds: dict[tuple[str, int], list[dict[str, float]]] = {}
    for d in sorted((a.study / "runs").iterdir()):
        name = re.sub(r"-s\d+-[0-9a-f]+$", "", d.name)  # the run's condition: its name without seed and hash
        first = (d / "runs_trec").glob(f"checkpoint-*.{sets[0][0]}.run")
        for step in sorted(int(f.name.split(".")[0].removeprefix("checkpoint-")) for f in first):
            pooled: dict[str, float] = {}
            for s, _ in sets:
                run_file = d / "runs_trec" / f"checkpoint-{step}.{s}.run"
                if not run_file.exists():
                    break
                pooled.update({f"{s}:{q}": v for q, v in per_query(read_run(run_file), qrels[s]).items()})
            else:
                if set(pooled) != set(qs):
                    raise SystemExit(f"{d.name} step {step}: {len(pooled)} judged queries, BM25 has {len(qs)}")
                seeds.setdefault((name, step), []).append(pooled)
    runs: dict[tuple[str, int], dict[str, float]] = {}
    for (name, step), reps in seeds.items():  # per query, the mean over the condition's seeds
        runs[(name, step)] = pooled = {q: sum(r[q] for r in reps) / len(reps) for q in qs}
        p = ttest_rel([pooled[q] for q in qs], [bm25[q] for q in qs]).pvalue
        spread = "" if len(reps) == 1 else (f"  ({len(reps)} seeds: " + ", ".join(f"{mean(r):.4f}" for r in reps)
                                            + ")")
        print(f"{name:10s} step {step:5d}: {mean(pooled):.4f}  vs BM25 p = {p:.3g}{spread}")
    tests = []
    for pair in a.pairs:
        x, y = (next((n for n, _ in runs if n == z or n.endswith("-" + z)), z) for z in pair.split(":"))
        if (x, a.step) not in runs or (y, a.step) not in runs:
            have = sorted({n for n, _ in runs})
            raise SystemExit(f"--pairs {pair}: no step-{a.step} TREC runs for both (runs: {have})")
        A, B = runs[(x, a.step)], runs[(y, a.step)]
        same = all(A[q] == B[q] for q in qs)  # t-test undefined (nan): no difference at all
        p = 1.0 if same else ttest_rel([A[q] for q in qs], [B[q] for q in qs]).pvalue
        note = " (identical)" if same else ""
        if a.margin is not None:  # two one-sided tests: the difference above -margin and below +margin
            d = [A[q] - B[q] for q in qs]
            p_tost = max(ttest_1samp(d, -a.margin, alternative="greater").pvalue,
                         ttest_1samp(d, a.margin, alternative="less").pvalue)
            note += f", TOST +-{a.margin} p = {p_tost:.3g}"
        tests.append((x, y, mean(A), mean(B), p, note))
    for (x, y, ma, mb, p, note), ph in zip(tests, holm([t[4] for t in tests])):
        print(f"{x} vs {y} at step {a.step}: {ma:.4f} vs {mb:.4f}  p = {p:.3g}{note}, Holm over {len(tests)}: {ph:.3g}")


if __name__ == "__main__":
    main()
