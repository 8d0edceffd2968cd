import numpy as np
import pytest
import torch

from lorank.analyze.probes import extract_features, fit_probes


def _planted(n_queries=12, per_query=20, positions=6, d=12, signal_at=3, seed=0):
    rng = np.random.default_rng(seed)
    n = n_queries * per_query
    y = (rng.random(n) < 0.35).astype(int)
    groups = np.repeat(np.arange(n_queries), per_query)
    X = rng.normal(size=(n, positions, d)).astype(np.float32)
    X[:, signal_at, :2] += 1.5 * y[:, None]
    return X, y, groups


def test_a_probe_finds_the_layer_that_carries_the_label():
    X, y, groups = _planted(signal_at=3)
    rows = fit_probes(X, y, groups, n_splits=4)
    aucs = [r["auc"] for r in rows]
    assert int(np.argmax(aucs)) == 3
    assert aucs[3] > 0.85
    assert max(a for i, a in enumerate(aucs) if i != 3) < 0.7
    assert rows[3]["accuracy"] > max(y.mean(), 1 - y.mean())


def test_constant_features_score_chance_within_queries():
    """The embedding of the last token (always EOS) is the same for every pair: no signal. Pooled
    out-of-fold AUC can drift from 0.5 through the folds' base rates; the within-query AUC cannot."""
    from lorank.analyze.probes import per_query_auc

    X, y, groups = _planted()
    X[:, 0] = 1.0
    r = fit_probes(X[:, :1], y, groups, n_splits=4)[0]
    assert r["auc_per_query"] == pytest.approx(0.5)
    assert per_query_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 5.0, 6.0]), np.array([1, 1, 2, 2])) == 1.0


def test_nested_C_selection_records_its_choices():
    X, y, groups = _planted(signal_at=1, positions=2)
    rows = fit_probes(X, y, groups, n_splits=3, C=(0.01, 1.0))
    assert all(len(r["C"]) == 3 and set(r["C"]) <= {0.01, 1.0} for r in rows)
    assert rows[1]["auc_per_query"] > 0.8
    assert fit_probes(X, y, groups, n_splits=3, C=0.5)[1]["C"] == [0.5, 0.5, 0.5]


def test_folds_split_by_query_so_query_identity_does_not_leak():
    """Labels constant within a query, features identify the query: only a query-level leak could
    predict them. GroupKFold holds whole queries out, so the probe stays near chance."""
    rng = np.random.default_rng(1)
    nq, per, d = 60, 5, 16
    groups = np.repeat(np.arange(nq), per)
    yq = rng.permutation(np.r_[np.ones(nq // 2), np.zeros(nq - nq // 2)]).astype(int)
    y = yq[groups]
    qvec = rng.normal(size=(nq, d))
    X = (qvec[groups] + 0.05 * rng.normal(size=(nq * per, d)))[:, None, :].astype(np.float32)
    auc = fit_probes(X, y, groups, n_splits=5)[0]["auc"]
    assert auc < 0.8


def test_probe_input_errors():
    from lorank.errors import LorankError

    X, y, g = _planted()
    with pytest.raises(LorankError, match="both"):
        fit_probes(X, np.zeros_like(y), g)
    with pytest.raises(LorankError, match="2 queries"):
        fit_probes(X, y, np.zeros_like(g))
    with pytest.raises(LorankError):
        fit_probes(X[:, 0], y, g)


def _tiny_peft(shape="tiny-llama"):
    from lorank.lora import LoraSpec, apply_lora
    from lorank.models.random_init import random_reranker
    from tests.analyze.conftest import randomize_lora

    pm = apply_lora(random_reranker(shape), LoraSpec(rank=4, alpha=8, dropout=0.0)).eval()
    randomize_lora(pm, seed=5)
    return pm


SEQS = [list(range(5, 5 + n)) for n in (7, 3, 11, 5, 9)]


def test_features_are_the_last_real_token_of_each_layer_despite_padding():
    pm = _tiny_peft()
    X, scores = extract_features(pm, SEQS, pad_id=1, batch_tokens=10_000)
    assert X.shape == (5, 5, 64)
    for i, s in enumerate(SEQS):
        with torch.no_grad():
            out = pm(input_ids=torch.tensor([s]), output_hidden_states=True)
        hs = out.hidden_states  # embeddings, layer 0..L-2 outputs, final-normed last layer
        for p in range(len(hs) - 1):
            np.testing.assert_allclose(X[i, p], hs[p][0, -1].numpy(), atol=1e-5)
        assert scores[i] == pytest.approx(float(out.logits.reshape(-1)[0]), abs=1e-5)


def test_base_features_are_the_lora_free_model_with_the_trained_head():
    from lorank.ablate import Mask, ablated

    pm = _tiny_peft()
    with ablated(pm, Mask("off")):
        Xb, sb = extract_features(pm, SEQS, pad_id=1)
    Xf, sf = extract_features(pm, SEQS, pad_id=1)
    with pm.disable_adapter():  # the backbone without LoRA (this also swaps the head: scores differ)
        Xd, sd = extract_features(pm, SEQS, pad_id=1)
    np.testing.assert_array_equal(Xb, Xd)
    assert not np.allclose(Xb[:, 1:], Xf[:, 1:])
    np.testing.assert_array_equal(Xb[:, 0], Xf[:, 0])  # embeddings are not LoRA-wrapped
    assert not np.allclose(sb, sd)  # ablated() kept the trained head, disable_adapter() did not
