"""AdaLoRA (issue 44) through PEFT on tiny random models: lorank's orthogonality penalty is PEFT's; a few steps of a
tiny budget schedule prune the ranks, and the allocation read back (live model, saved adapter, the analysis view)
equals PEFT's masks; a few steps through ``lorank.train`` run the budget callback and save PEFT's rank pattern."""
import json

import pytest
import torch

from lorank.analyze import adalora_allocation
from lorank.lora import LoraSpec, apply_lora
from lorank.lora.adalora import orth_penalty, rank_allocation, update_budget
from lorank.models.random_init import random_reranker
from tests.tinydata import make_trec_dir, save_tiny_model

IDS = torch.randint(3, 300, (4, 9))
STEPS = 8


def _adalora(total=STEPS):
    torch.manual_seed(0)
    spec = LoraSpec(rank=6, alpha=8, dropout=0.0, variant="adalora",
                    adalora={"target_r": 2, "tinit": 2, "tfinal": 3, "deltaT": 1, "orth_reg_weight": 0.3})
    return apply_lora(random_reranker("tiny-llama"), spec, total_step=total)


def test_the_orthogonality_penalty_is_pefts():
    pm = _adalora().train()
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.2)
    y = torch.randn(4)
    with torch.no_grad():
        with_penalty = pm(input_ids=IDS, labels=y).loss  # PEFT adds the penalty to a model's own loss
        plain = torch.nn.functional.mse_loss(pm(input_ids=IDS).logits.squeeze(-1), y)
        ours = orth_penalty(pm)
    assert float(ours) > 0
    torch.testing.assert_close(with_penalty - plain, ours, rtol=1e-5, atol=1e-6)


def _train_steps(pm):
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    pm.train()
    for step in range(STEPS):
        loss = pm(input_ids=IDS).logits.square().mean() + orth_penalty(pm)
        loss.backward()
        opt.step()
        update_budget(pm, step)  # after the optimizer step, before zero_grad, as PEFT's loop
        opt.zero_grad()


def test_a_tiny_budget_schedule_prunes_and_the_allocation_reads_back_as_peft_holds_it(tmp_path):
    pm = _adalora()
    _train_steps(pm)
    cfg = pm.peft_config["default"]
    assert cfg.rank_pattern, "the budget was allocated"
    alloc = rank_allocation(pm)
    masks = {k: sum(map(bool, v)) for k, v in cfg.rank_pattern.items()}
    n_layers = pm.config.num_hidden_layers
    assert len(alloc) == len(masks) == 7 * n_layers  # every projection of every layer of tiny-llama
    assert sorted(v["rank"] for v in alloc.values()) == sorted(masks.values())
    assert sum(v["rank"] for v in alloc.values()) == 2 * len(alloc)  # the final budget: target_r per module
    nonzero = {}
    for name, mod in pm.named_modules():
        if hasattr(mod, "lora_E") and "default" in mod.lora_E:
            nonzero[name] = int((mod.lora_E["default"] != 0).sum())
    assert sorted(nonzero.values()) == sorted(masks.values())  # PEFT's masks hold in the weights
    pm.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "ADALORA" and saved["rank_pattern"]
    view = adalora_allocation(tmp_path / "ckpt", tmp_path / "view")
    assert view["layers"] == list(range(n_layers)) and view["kept"] == sum(masks.values()) and view["init_r"] == 6
    got = {(layer, p): view["ranks"][i][j] for i, layer in enumerate(view["layers"])
           for j, p in enumerate(view["projections"])}
    assert got == {k: v["rank"] for k, v in alloc.items()}
    assert (tmp_path / "view" / "adalora_allocation.png").is_file()
    assert json.loads((tmp_path / "view" / "adalora_allocation.json").read_text())["ranks"] == view["ranks"]


def test_a_few_adalora_training_steps(tmp_path):
    from lorank.adapters import read_checkpoint_meta
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    dev, model = make_trec_dir(tmp_path / "dev"), save_tiny_model(tmp_path / "model")
    out = tmp_path / "run"
    cfg = TrainConfig.from_dict({
        "model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(dev)}], "group_size": 4,
        "batch_queries": 2, "max_steps": 6, "lr": 1e-3, "seed": 7,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "variant": "adalora",
                 "adalora": {"target_r": 2, "tinit": 1, "tfinal": 2}},
        "checkpoints": {"steps": "6"}, "eval": {"sets": [], "test_sets": []}, "output_dir": str(out)})
    train(cfg, progress=False)
    ck = out / "checkpoint-6"
    saved = json.loads((ck / "adapter_config.json").read_text())
    assert saved["peft_type"] == "ADALORA" and saved["total_step"] == 6 and saved["rank_pattern"]
    assert read_checkpoint_meta(ck)["lora"]["variant"] == "adalora"
    assert json.loads((out / "train_summary.json").read_text())["execution"]["forward"] == "hf"
    view = adalora_allocation(ck)
    assert view["kept"] == 2 * view["modules"] and view["allocated"]
    from lorank.reranker import Reranker

    rr = Reranker.from_adapter(out, bf16=False)  # the run's last checkpoint, through its lorank metadata
    assert rr.meta["lora"]["variant"] == "adalora" and rr.meta["checkpoint"] == str(ck)
    assert rr.score("a query", ["a passage", "another passage"]).shape == (2,)


def test_packed_forward_is_refused_for_the_variants(tmp_path):
    from lorank.errors import ConfigError
    from lorank.train.config import TrainConfig
    from lorank.train.run import choose_forward

    for lora in ({"variant": "dylora"}, {"variant": "adalora"}):
        cfg = TrainConfig.from_dict({"model": "x", "data": [{"kind": "trec", "path": "dl20"}], "max_steps": 10,
                                     "lora": lora, "forward": "packed"})
        with pytest.raises(ConfigError, match=f"lora.variant: {lora['variant']}"):
            choose_forward(cfg, None, "none", False)


def test_an_adalora_run_resumed_from_a_checkpoint_goes_on_as_the_uninterrupted_one(tmp_path):
    """PEFT saves the adapter resized to the kept ranks, which did not load back into the full-size training modules
    (a size mismatch on resume); the checkpoint's adalora_state.safetensors resumes it exactly, importance and all."""
    import shutil

    from safetensors.torch import load_file

    from lorank.lora.adalora import TRAINING_STATE
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    dev, model = make_trec_dir(tmp_path / "dev"), save_tiny_model(tmp_path / "model")

    def cfg(out):
        return TrainConfig.from_dict({
            "model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(dev)}], "group_size": 4,
            "batch_queries": 2, "max_steps": 8, "lr": 1e-3, "seed": 7,
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "variant": "adalora",
                     "adalora": {"target_r": 2, "tinit": 1, "tfinal": 3}},
            "checkpoints": {"steps": "3,6,8"}, "eval": {"sets": [], "test_sets": []}, "output_dir": str(out)})

    train(cfg(tmp_path / "a"), progress=False)
    assert json.loads((tmp_path / "a" / "checkpoint-3" / "adapter_config.json").read_text())["rank_pattern"]
    for at in (3, 6):  # inside the budget phase (resized adapter, live importance) and in the final phase
        b = tmp_path / f"b{at}"
        shutil.copytree(tmp_path / "a" / f"checkpoint-{at}", b / f"checkpoint-{at}")
        train(cfg(b), progress=False)
        for name in ("adapter_model.safetensors", TRAINING_STATE):
            want, got = (load_file(r / "checkpoint-8" / name) for r in (tmp_path / "a", b))
            assert want.keys() == got.keys()
            for k in want:
                torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=f"{name} {k} resumed at {at}")


@pytest.mark.parametrize("beta", ["beta1", "beta2"])
def test_a_smoothing_beta_of_0_is_refused_by_the_spec_not_by_pefts_assert(beta):
    from pydantic import ValidationError

    with pytest.raises((ValidationError, ValueError), match=beta):
        LoraSpec(rank=4, variant="adalora", adalora={"target_r": 2, beta: 0.0})


def test_an_adalora_run_scores_its_test_sets_on_each_saved_checkpoint_as_that_checkpoint_loads(tmp_path, monkeypatch):
    """eval.test_sets after training load each chosen checkpoint into the live (full-size) model: PEFT's loader
    resized the live modules to the checkpoint's rank pattern, and putting the model's weights back then failed
    (a size mismatch at the end of every AdaLoRA run with a test set). Each test run equals what a fresh load of that
    checkpoint (Reranker.from_adapter) writes, for a checkpoint inside the budget phase and the final one."""
    from lorank.data import load_run
    from lorank.reranker import Reranker
    from lorank.train.config import TrainConfig
    from lorank.train.run import train

    monkeypatch.setenv("LORANK_BF16", "0")
    dev, held = make_trec_dir(tmp_path / "dev"), make_trec_dir(tmp_path / "held", seed=1, first_qid=500)
    model, out = save_tiny_model(tmp_path / "model"), tmp_path / "run"
    cfg = TrainConfig.from_dict({
        "model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(dev)}], "group_size": 4,
        "batch_queries": 2, "max_steps": 8, "lr": 1e-2, "seed": 7,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "variant": "adalora",
                 "adalora": {"target_r": 2, "tinit": 1, "tfinal": 3, "deltaT": 2}},
        "checkpoints": {"steps": "3,8"}, "output_dir": str(out),
        "eval": {"sets": [], "test_sets": [str(held)], "depth": 12, "test_steps": [3, 8]}})
    train(cfg, progress=False)
    from lorank.data import resolve_eval_set

    rs = resolve_eval_set(str(held))
    for step in (3, 8):
        ck = out / f"checkpoint-{step}"
        assert json.loads((ck / "adapter_config.json").read_text())["rank_pattern"]
        written = {q: {e.docid: e.score for e in es} for q, es in load_run(out / "runs_trec" / f"{ck.name}.held.run")
                   .items()}
        fresh = Reranker.from_adapter(ck, bf16=False).rerank(rs.queries, rs.passages, rs.run, depth=12)
        assert written.keys() == fresh.keys()
        for q in fresh:
            assert written[q].keys() == fresh[q].keys()
            for d in fresh[q]:
                assert abs(written[q][d] - fresh[q][d]) < 1e-4, (step, q, d)
