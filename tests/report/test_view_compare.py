"""The seed papers' views against the trained adapters (lorank.report.view_compare, `lorank analyze compare-views`):
hand-made AdaLoRA allocations, fake ICR profiles and a fake rank-prefix sweep (the committed rank-truncation runs
under DyLoRA's names) against the committed SmolLM2 study, and an 18-layer copy of it (a Gemma-3-like family). It
checks the pairing of layers (by index, no offset), the normalised depth (by the model's own layer count), rho
against scipy's on the point estimates, the query bootstrap's CI (contains the estimate, wider with fewer queries),
the figures, the CLI end to end, and that a missing input is named."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from lorank.ablate.run import run_file_stem
from lorank.cli import app
from lorank.errors import ConfigError
from lorank.report.families import pooled_ablations, read_family
from lorank.report.view_compare import (compare_adalora, compare_dylora, compare_icr, correlate, layer_depth,
                                        read_study)

ROOT = Path(__file__).resolve().parents[2]
SMOL = ROOT / "results" / "study_smollm2_cpu"
REF = SMOL / "ablations" / "adapter-reference"
BOOT = 300
PROJS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _rows(step: int, sweep: str) -> dict[str, float]:
    data = json.loads((REF / str(step) / "ablations.json").read_text())
    return {r["config"]: r["ndcg_cut_10"] for r in data["sweeps"][sweep]["rows"]}


def _dl19_drops() -> list[float]:
    """Each layer's leave-one-layer-out drop on DL19, as the committed ablations.json rounds it."""
    rows = _rows(2, "layers-leave-one-out")
    return [rows["full"] - rows[f"without L{i}"] for i in range(30)]


@pytest.fixture(scope="module")
def view():
    return read_study(SMOL)


def test_the_per_query_reader_pools_as_the_families_reader(view):
    """read_study's per-query values give the pooled nDCG@10 that lorank.report.families computes."""
    fam = read_family(SMOL)
    assert (view.role, view.sets, view.n_queries, view.family.n_layers) == ("dev", ["dl19", "dl20"], 97, 30)
    pooled = pooled_ablations(view.plan, SMOL, fam.subject)["dev"]
    for sweep, configs in view.ablations.items():
        for config, pq in configs.items():
            assert np.mean(list(pq.values())) == pytest.approx(pooled[sweep][config]["ndcg"], abs=1.5e-4), (sweep, config)  # each set rounded to 1e-4


def _allocation(tmp: Path, per_layer: list[float], name: str = "alloc.json") -> Path:
    ranks = [[int(v)] + [j for j in range(1, len(PROJS))] for v in per_layer]
    f = tmp / name
    f.write_text(json.dumps({"kind": "adalora_allocation", "layers": list(range(len(per_layer))),
                             "projections": PROJS, "ranks": ranks, "init_r": 12, "target_r": 8}))
    return f


@pytest.fixture(scope="module")
def adalora(tmp_path_factory, view):
    """An allocation whose per-layer rank orders the layers as their pooled leave-one-layer-out drop does."""
    tmp = tmp_path_factory.mktemp("adalora")
    rows = view.ablations["layers-leave-one-out"]
    full = np.mean(list(rows["full"].values()))
    drops = [full - np.mean(list(rows[f"without L{i}"].values())) for i in range(30)]
    order = stats.rankdata(drops, method="ordinal")
    return compare_adalora(_allocation(tmp, list(order)), SMOL, tmp / "out", n_boot=BOOT), tmp


def test_adalora_pairs_each_layer_with_its_own_drop(adalora, tmp_path):
    res, tmp = adalora
    layers = res["correlations"][0]
    assert layers["name"] == "per layer" and layers["n_units"] == 30 and layers["n_queries"] == 97
    assert layers["rho"] == 1.0  # the allocation ranks the layers as the drops do
    # each resample adds the queries' noise to the drops once more: the rhos lean toward 0 (the JSON says so)
    assert 0.3 < layers["ci95"][0] < layers["ci95"][1] < 1.0 and "lean toward 0" in res["bootstrap"]
    assert [u["layer"] for u in layers["units"]] == list(range(30))
    shifted = json.loads((tmp / "alloc.json").read_text())
    shifted["ranks"] = shifted["ranks"][1:] + shifted["ranks"][:1]  # layer l given layer l+1's rank
    (tmp_path / "shifted.json").write_text(json.dumps(shifted))
    off = compare_adalora(tmp_path / "shifted.json", SMOL, tmp_path / "out", n_boot=BOOT)["correlations"][0]
    assert off["rho"] < 0.5


def test_adalora_rho_is_scipys_and_its_ci_holds_the_estimate(adalora):
    _, tmp = adalora
    rng = np.random.default_rng(7)  # an allocation not fitted to the observed drops
    res = compare_adalora(_allocation(tmp, list(rng.integers(0, 13, 30) * 4), "random.json"), SMOL, tmp / "out",
                          n_boot=BOOT)
    assert [c["name"] for c in res["correlations"]] == ["per layer", "per layer window", "per projection (without)",
                                                        "per projection (only)"]
    assert [c["n_units"] for c in res["correlations"]] == [30, 5, 7, 7]
    for c in res["correlations"]:
        x, y = [u["x"] for u in c["units"]], [u["y"] for u in c["units"]]
        assert c["rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-4), c["name"]
        assert c["ci95"][0] - 1e-9 <= c["rho"] <= c["ci95"][1] + 1e-9, c["name"]
    wins = res["correlations"][1]["units"]
    assert [w["unit"] for w in wins] == ["L0-10", "L5-15", "L10-20", "L15-25", "L19-29"]
    per_layer = {u["layer"]: u["x"] for u in res["correlations"][0]["units"]}
    assert wins[1]["x"] == sum(per_layer[i] for i in range(5, 16))  # the window sums its own layers' ranks
    assert wins[0]["y"] == pytest.approx((_rows(1, "layer-windows")["only L0-10"] * 43
                                          + _rows(4, "layer-windows")["only L0-10"] * 54) / 97, abs=1e-4)
    proj = {u["unit"]: u["x"] for u in res["correlations"][2]["units"]}
    assert proj["q_proj"] == sum(per_layer.values()) - 30 * 21 and proj["k_proj"] == 30  # summed over the 30 layers
    assert "query" in res["bootstrap"] and res["study"]["role"] == "dev" and res["study"]["sets"] == ["dl19", "dl20"]
    assert (tmp / "out" / "adalora_vs_ablations.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp / "out" / "adalora_vs_ablations.json").read_text())["correlations"] == res["correlations"]


def test_the_ci_widens_with_fewer_queries():
    rng = np.random.default_rng(1)
    truth = np.linspace(0.0, 0.05, 8)
    x = list(range(8))

    def configs(n: int) -> dict[str, dict[str, float]]:
        base = rng.normal(0.5, 0.2, n)
        out = {"full": {f"q{i}": float(b) for i, b in enumerate(base)}}
        for u, t in enumerate(truth):
            out[f"u{u}"] = {f"q{i}": float(b - t + rng.normal(0, 0.15)) for i, b in enumerate(base)}
        return out

    def imp(m):
        return np.array([m["full"] - m[f"u{u}"] for u in range(8)])

    wide, narrow = correlate(x, configs(20), imp, "t/20", 500), correlate(x, configs(400), imp, "t/400", 500)
    assert (wide["n_queries"], narrow["n_queries"]) == (20, 400)
    for c in (wide, narrow):
        assert c["ci95"][0] <= c["rho"] <= c["ci95"][1]
    assert wide["ci95"][1] - wide["ci95"][0] > narrow["ci95"][1] - narrow["ci95"][0]


# -- ICR: layers paired by index, depth by each model's own layer count ----------------------------------------------

GEMMA_WINDOWS = {"only L0-10": "only L0-6", "only L5-15": "only L3-9", "only L10-20": "only L6-12",
                 "only L15-25": "only L9-15", "only L19-29": "only L11-17"}


@pytest.fixture(scope="module")
def gemma_like(tmp_path_factory) -> Path:
    """The committed study as an 18-layer family (Gemma 3 270M): leave-one-layer-out kept for L0-17, its windows
    renamed to an 18-layer model's, TREC runs copied under the new names."""
    import yaml

    d = tmp_path_factory.mktemp("families") / "study_gemma_like"
    d.mkdir()
    spec = yaml.safe_load((SMOL / "study.yaml").read_text())
    spec.update(name="gemma-like", models=["gemma3-270m"], analyses=[])
    (d / "study.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(SMOL / "findings.json", d / "findings.json")
    for f in REF.glob("*/ablations.json"):
        data, out = json.loads(f.read_text()), d / f.relative_to(SMOL)
        out.parent.mkdir(parents=True)
        for sweep, entry in data["sweeps"].items():
            keep = [r for r in entry["rows"] if not r["config"].startswith("without L")
                    or int(r["config"][9:]) < 18]
            for r in keep:
                new = GEMMA_WINDOWS.get(r["config"], r["config"])
                src = f.parent / "runs" / sweep / f"{run_file_stem(r['config'])}.run"
                dst = out.parent / "runs" / sweep / f"{run_file_stem(new)}.run"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
                r["config"] = new
            entry["rows"] = keep
        out.write_text(json.dumps(data))
    return d


def _profile(tmp: Path, layers: list[float], name: str, set_name: str = "trec-dl-2019") -> Path:
    f = tmp / name
    f.write_text(json.dumps({"set": set_name, "queries": 43, "model": "m", "icr": 0.5, "first_stage": 0.48,
                             "layers": [float(v) for v in layers]}))
    return f


def test_icr_pairs_layers_by_index_and_places_them_by_each_models_depth(tmp_path, gemma_like):
    drops = _dl19_drops()
    pairs = [(_profile(tmp_path, drops, "smol.json"), SMOL), (_profile(tmp_path, drops[:18], "gemma.json"), gemma_like)]
    res = compare_icr(pairs, tmp_path / "out", n_boot=BOOT)
    smol, gemma = res["pairs"]
    for p, n in ((smol, 30), (gemma, 18)):
        layers = p["correlations"][0]
        assert p["study"]["n_layers"] == n and layers["n_units"] == n and p["study"]["sets"] == ["dl19"]
        assert [u["depth"] for u in layers["units"]] == [round((i + 0.5) / n, 4) for i in range(n)]
        assert [u["depth"] for u in p["icr_by_depth"]] == [layer_depth(i, n) for i in range(n)]
        assert layer_depth(0, n) == round(0.5 / n, 4) and layer_depth(n - 1, n) == round(1 - 0.5 / n, 4)
        for u in layers["units"]:  # layer l's ICR value beside layer l's own drop (ablations.json rounds to 1e-4)
            assert u["x"] == drops[u["layer"]] and u["y"] == pytest.approx(drops[u["layer"]], abs=2e-4)
        assert layers["rho"] > 0.99
        assert layers["rho"] == pytest.approx(stats.spearmanr([u["x"] for u in layers["units"]],
                                                              [u["y"] for u in layers["units"]]).statistic, abs=1e-4)
    gw = [u["unit"] for u in gemma["correlations"][1]["units"]]
    assert gw == ["L0-6", "L3-9", "L6-12", "L9-15", "L11-17"]
    assert gemma["correlations"][1]["units"][0]["centre"] == round(3.5 / 18, 4)
    shifted = compare_icr([(_profile(tmp_path, np.roll(drops, 1), "roll.json"), SMOL)], tmp_path / "o2", n_boot=BOOT)
    assert shifted["pairs"][0]["correlations"][0]["rho"] < 0.5
    assert (tmp_path / "out" / "icr_vs_layers.png").read_bytes()[:4] == b"\x89PNG"
    for p in res["pairs"]:  # an older profile, without per-query values: held fixed, and the JSON says so
        assert p["icr_side"]["resampled"] is False and "held fixed" in p["icr_side"]["why"]
        assert all("view_side" not in c for c in p["correlations"])
    assert "held fixed" in res["bootstrap"]
    with pytest.raises(ConfigError, match="30 layers, but gemma3-270m .* has 18"):
        compare_icr([(_profile(tmp_path, drops, "wrong.json"), gemma_like)], tmp_path / "o3", n_boot=BOOT)


def _dl19(view) -> dict[str, dict[str, float]]:
    """The adapter's per-query leave-one-layer-out values on DL19 (qid -> nDCG@10), per configuration."""
    rows = view.ablations["layers-leave-one-out"]
    return {c: {q.removeprefix("dl19:"): v for q, v in pq.items() if q.startswith("dl19:")} for c, pq in rows.items()}


def _pq_profile(tmp: Path, name: str, per_layer: list[dict[str, float]], qids: list[str]) -> Path:
    """A profile with per-query values: layer l's value of query q is per_layer[l][q]; its figures their means."""
    rows = [[per_layer[i][q] for q in qids] for i in range(len(per_layer))]
    f = tmp / name
    f.write_text(json.dumps({"set": "trec-dl-2019", "queries": len(qids), "model": "m", "icr": 0.5,
                             "first_stage": 0.48, "layers": [float(np.mean(r)) for r in rows],
                             "per_query": {"qids": qids, "icr": [0.5] * len(qids), "layers": rows}}))
    return f


def _without_per_query(f: Path) -> Path:
    old = json.loads(f.read_text())
    del old["per_query"]
    out = f.with_name("old_" + f.name)
    out.write_text(json.dumps(old))
    return out


def test_icr_per_query_profile_is_resampled_with_the_adapters_query_draw(tmp_path, view):
    dl19 = _dl19(view)
    qids = sorted(dl19["full"])
    drops = [{q: dl19["full"][q] - dl19[f"without L{i}"][q] for q in qids} for i in range(30)]
    # the ICR side per query is the adapter's own drop: with one draw for both sides, every draw's rho is ~1
    same = compare_icr([(_pq_profile(tmp_path, "same.json", drops, qids), SMOL)], tmp_path / "o1",
                       n_boot=BOOT)["pairs"][0]
    fixed = compare_icr([(_without_per_query(tmp_path / "same.json"), SMOL)], tmp_path / "o2", n_boot=BOOT)["pairs"][0]
    assert same["icr_side"]["resampled"] is True and same["icr_side"]["profile_queries"] == 43
    s, f = same["correlations"][0], fixed["correlations"][0]
    assert (s["view_side"], s["n_queries"], s["queries_view_only"], s["queries_adapter_only"]) == (
        "resampled with the queries", 43, 0, 0)
    assert s["rho"] > 0.99 and f["rho"] > 0.99
    assert s["ci95"][0] > 0.98  # paired draws: the two sides move together
    assert f["ci95"][0] < 0.9  # the same profile held fixed: the drops' resampling noise alone pulls rho down
    assert [u["x"] for u in s["units"]] == pytest.approx([np.mean(list(d.values())) for d in drops], abs=1e-12)
    # a noisy ICR side: resampling it too widens the interval beyond holding it fixed
    rng = np.random.default_rng(3)
    noisy = [{q: 0.4 + 0.01 * i + rng.normal(0, 0.3) for q in qids} for i in range(30)]
    p = _pq_profile(tmp_path, "noisy.json", noisy, qids)
    both = compare_icr([(p, SMOL)], tmp_path / "o3", n_boot=BOOT)["pairs"][0]["correlations"]
    held = compare_icr([(_without_per_query(p), SMOL)], tmp_path / "o4", n_boot=BOOT)["pairs"][0]["correlations"]
    for b, h in zip(both, held):
        assert b["view_side"] == "resampled with the queries" and "view_side" not in h
        assert [u["x"] for u in b["units"]] == pytest.approx([u["x"] for u in h["units"]], abs=1e-9)
        assert b["rho"] == h["rho"]  # the same point estimates
        assert b["ci95"][1] - b["ci95"][0] >= h["ci95"][1] - h["ci95"][0], b["name"]
    assert both[0]["ci95"][1] - both[0]["ci95"][0] > held[0]["ci95"][1] - held[0]["ci95"][0]  # 30 layers (5 windows:
    # a rho over 5 units takes few values, so their interval may not move)
    assert "same draw" in json.loads((tmp_path / "o3" / "icr_vs_layers.json").read_text())["bootstrap"]


def test_icr_queries_on_one_side_only_are_counted(tmp_path, view):
    dl19 = _dl19(view)
    qids = sorted(dl19["full"])
    kept = qids[3:] + ["x1", "x2"]  # 3 of the adapter's queries missing, 2 the adapter lacks
    per_layer = [{q: 0.3 + 0.01 * i + (0.05 if q.startswith("x") else 0.0) for q in kept} for i in range(30)]
    res = compare_icr([(_pq_profile(tmp_path, "part.json", per_layer, kept), SMOL)], tmp_path / "o", n_boot=BOOT)
    for c in res["pairs"][0]["correlations"]:
        assert (c["n_queries"], c["queries_view_only"], c["queries_adapter_only"]) == (40, 2, 3), c["name"]
    # on a set the adapter's ablations did not run on (--set dl20): nothing to pair, held fixed and said so
    other = compare_icr([(tmp_path / "part.json", SMOL)], tmp_path / "o2", sets=["dl20"], n_boot=BOOT)["pairs"][0]
    assert other["icr_side"]["resampled"] is False and "not among the adapter's" in other["icr_side"]["why"]
    assert other["correlations"][0]["n_queries"] == 54


def test_icr_profile_of_a_set_the_study_did_not_ablate_is_named(tmp_path):
    with pytest.raises(ConfigError, match="on trec-dl-2022"):
        compare_icr([(_profile(tmp_path, range(30), "dl22.json", "trec-dl-2022"), SMOL)], tmp_path, n_boot=BOOT)


# -- DyLoRA -----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefix_sweep(tmp_path_factory) -> Path:
    """A rank-prefix sweep on DL19 whose TREC runs are the committed rank truncation's (rank k -> prefix k)."""
    d = tmp_path_factory.mktemp("dylora") / "ablation-dl19"
    data = json.loads((REF / "1" / "ablations.json").read_text())
    rows = data["sweeps"]["rank-truncation"]["rows"]
    for r in rows:
        new = r["config"].replace("rank ", "prefix ")
        dst = d / "runs" / "rank-prefix" / f"{run_file_stem(new)}.run"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REF / "1" / "runs" / "rank-truncation" / f"{run_file_stem(r['config'])}.run", dst)
        r["config"] = new
    (d / "ablations.json").write_text(json.dumps({"adapter": str(d / "no-adapter"), "eval_set": "dl19", "depth": 50,
                                                  "queries": 43, "sweeps": {"rank-prefix": {"rows": rows}}}))
    return d


def test_dylora_curve_beside_the_grid_and_the_truncation(prefix_sweep, tmp_path):
    res = compare_dylora([prefix_sweep], SMOL, tmp_path, full_rank=8, n_boot=BOOT)
    by = {}
    for p in res["points"]:
        by.setdefault(p["series"].split(" ")[0], {})[p["rank"]] = p
    assert sorted(by["DyLoRA:"]) == [1, 2, 4, 8] and sorted(by["plain"]) == [1, 2, 4, 8]
    assert sorted(by["trained"]) == [1, 2, 8, 32]
    trunc = _rows(1, "rank-truncation")
    for k, config in ((1, "rank 1"), (2, "rank 2"), (4, "rank 4"), (8, "full")):
        assert by["DyLoRA:"][k]["ndcg"] == by["plain"][k]["ndcg"] == pytest.approx(trunc[config], abs=1e-4)
    final = {}
    for line in (SMOL / "results.csv").read_text().splitlines()[1:]:
        f = line.split(",")
        if f[0] == "checkpoint" and f[12] == "True" and f[13] == "dl19" and f[6] == "all":
            final[int(f[3])] = float(f[17])
    for k, p in by["trained"].items():
        assert p["ndcg"] == pytest.approx(final[k], abs=1e-4) and list(p["replicates"]) == ["s42"]
    for p in res["points"]:
        assert (p["role"], p["sets"], p["n_queries"]) == ("dev", ["dl19"], 43) and p["source"]
        assert p["ci95"][0] <= p["ndcg"] <= p["ci95"][1]
    assert (tmp_path / "dylora_rank_curve.png").read_bytes()[:4] == b"\x89PNG"
    unknown = compare_dylora([prefix_sweep / "ablations.json"], SMOL, tmp_path / "o2", n_boot=BOOT)
    assert 8 not in {p["rank"] for p in unknown["points"] if p["series"].startswith("DyLoRA")}
    assert "--full-rank" in unknown["notes"][0]


# -- the CLI, and the missing inputs ----------------------------------------------------------------------------------

def test_cli_end_to_end_and_missing_inputs_named(adalora, prefix_sweep, tmp_path):
    _, tmp = adalora
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(app, ["analyze", "compare-views", "adalora", "--allocation", str(tmp / "alloc.json"),
                            "--study", str(SMOL), "--out", str(out), "--boot", "200"])
    assert r.exit_code == 0, r.output
    assert "per layer: rho +1.000" in r.output.replace("\n", " ")
    assert json.loads((out / "adalora_vs_ablations.json").read_text())["command"].startswith("lorank ")
    r = runner.invoke(app, ["analyze", "compare-views", "dylora", "--sweep", str(prefix_sweep), "--study", str(SMOL),
                            "--out", str(out), "--full-rank", "8", "--boot", "200"])
    assert r.exit_code == 0, r.output
    assert (out / "dylora_rank_curve.png").is_file()
    prof = _profile(tmp_path, _dl19_drops(), "p.json")
    r = runner.invoke(app, ["analyze", "compare-views", "icr", "--profile", str(prof), "--study", str(SMOL),
                            "--out", str(out), "--boot", "200"])
    assert r.exit_code == 0, r.output
    assert (out / "icr_vs_layers.png").is_file()
    for args, missing in ((["adalora", "--allocation", str(tmp_path / "none.json"), "--study", str(SMOL)], "none.json"),
                          (["dylora", "--sweep", str(tmp_path / "nosweep"), "--study", str(SMOL)], "nosweep"),
                          (["icr", "--profile", str(tmp_path / "noprof.json"), "--study", str(SMOL)], "noprof.json"),
                          (["icr", "--profile", str(prof), "--study", str(tmp_path / "nostudy")], "nostudy")):
        r = runner.invoke(app, ["analyze", "compare-views", *args, "--out", str(tmp_path / "x")])
        assert r.exit_code != 0 and missing in r.output.replace("\n", ""), (args, r.output)
