"""The packed training forward (lorank.models.packed) against the HF+PEFT forward it replaces."""
import json

import pytest
import torch
from transformers import TrainingArguments

from lorank.batching import length_chunks, pack_chunks
from lorank.data.records import Passage
from lorank.errors import ConfigError
from lorank.lora import LoraSpec, apply_lora
from lorank.lora.dropout import drop_lanes, keep_scale, lane_threshold
from lorank.models.inputs import PairEncoder
from lorank.models.packed import install_packed_forward, packed_support
from lorank.models.random_init import random_reranker, tiny_tokenizer
from lorank.train.collator import GroupCollator
from lorank.train.groups import GroupDataset, QueryPool
from lorank.train.losses import get_loss
from lorank.train.trainer import RerankTrainer, forward_scores


def _model(shape: str, spec: LoraSpec, dtype: torch.dtype = torch.float32, seed: int = 0):
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = apply_lora(random_reranker(shape, pad_token_id=tok.pad_token_id, dtype=dtype), spec)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
        if p.requires_grad:
            p.data = p.data.float()
    return model, tok


def _batch(tok, packed: bool, chunk_tokens: int = 60, repeat: int = 1):
    """Three queries' groups of 4 (1 positive + 3 of 7 negatives); `repeat` lengthens every passage."""
    pools = [QueryPool(f"q{i}", f"flea cycle {i}", [Passage("p", "flea cycle year " * (i + 2) * repeat)],
                       [Passage(f"n{j}", "bread oven host " * (j + 1) * repeat) for j in range(7)]) for i in range(3)]
    return GroupCollator(PairEncoder(tok), tok.pad_token_id, chunk_tokens=chunk_tokens, packed=packed)(
        [g for g in GroupDataset(pools, 4)])


def _step(model, batch, tmp_path, bf16: bool = False):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], bf16=bf16)
    tr = RerankTrainer(model=model, args=args, loss_fn=get_loss("contrastive"), data_collator=lambda x: x)
    tr.current_gradient_accumulation_steps = 1
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as HF's accelerate wraps the forward
        loss = tr.training_step(model, batch)
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


SPECS = {
    "all": LoraSpec(rank=2, alpha=8, dropout=0.0),
    "mha": LoraSpec(rank=3, alpha=6, dropout=0.0, components="mha"),
    "mlp": LoraSpec(rank=2, alpha=4, dropout=0.0, components="mlp"),
    "q,v+up, layers 1-2": LoraSpec(rank=2, alpha=4, dropout=0.0, projections=["q_proj", "v_proj", "up_proj"],
                                   layers="1-2"),
}


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-mistral"])
@pytest.mark.parametrize("spec", list(SPECS))
def test_packed_step_gives_the_hf_steps_loss_and_lora_gradients(tmp_path, shape, spec):
    model, tok = _model(shape, SPECS[spec])
    hf_batch = _batch(tok, packed=False)
    assert len(hf_batch["chunks"]) > 1  # several attention chunks, each padded to its own width
    l1, g1 = _step(model, hf_batch, tmp_path)
    install_packed_forward(model)
    l2, g2 = _step(model, _batch(tok, packed=True), tmp_path)
    assert l2 == pytest.approx(l1, rel=1e-5, abs=1e-6)
    assert g1.keys() == g2.keys() and len(g1) > 2
    for n in g1:
        scale = g1[n].abs().max().item() + 1e-8
        assert (g1[n] - g2[n]).abs().max().item() / scale < 1e-4, n


def test_packed_bf16_is_as_close_to_fp32_as_the_hf_bf16_path(tmp_path):
    """bf16 rounds differently in the two paths (fused matmuls, attention by matmuls): neither is exact; the
    packed one must not be further from the fp32 result than the HF one is (with a margin)."""
    spec = SPECS["all"]
    ref, tok = _model("tiny-llama", spec)
    _, g32 = _step(ref, _batch(tok, packed=False), tmp_path)
    hf, _ = _model("tiny-llama", spec, torch.bfloat16)
    _, g_hf = _step(hf, _batch(tok, packed=False), tmp_path, bf16=True)
    pk, _ = _model("tiny-llama", spec, torch.bfloat16)
    install_packed_forward(pk)
    _, g_pk = _step(pk, _batch(tok, packed=True), tmp_path, bf16=True)

    def err(g):
        return max((g[n] - g32[n]).norm().item() / (g32[n].norm().item() + 1e-8) for n in g32)

    assert err(g_pk) < max(2 * err(g_hf), 0.02), (err(g_pk), err(g_hf))


def test_install_keeps_the_hf_forward_and_the_weights_in_place():
    model, tok = _model("tiny-llama", LoraSpec(rank=2, dropout=0.2))
    batch = _batch(tok, packed=True)
    model.eval()
    before = forward_scores(model, batch["chunks"])
    keys = set(model.state_dict())
    packed = install_packed_forward(model)
    q = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    fused = packed.layers[0]["qkv"].weight
    assert q.data_ptr() == fused.data_ptr() and fused.shape[0] > q.shape[0]  # a view, no second copy
    assert set(model.state_dict()) == keys
    assert torch.allclose(forward_scores(model, batch["chunks"]), before, atol=1e-6)  # the HF path as before
    # in eval mode there is no dropout: the packed scores equal the HF ones
    assert torch.allclose(model(packed_batch=batch["packed"]), before, atol=1e-5)


def test_dropout_draws_one_mask_per_shared_input_with_the_recipes_rate():
    x = torch.ones(400, 64)
    thr = lane_threshold(0.1)
    kept = (drop_lanes(x, thr) != 0).float().mean().item()
    assert kept == pytest.approx(0.9, abs=0.01)
    assert keep_scale(0.1) == pytest.approx(1 / 0.9, rel=1e-4)
    # training: two forwards differ (dropout is on); eval: identical
    model, tok = _model("tiny-llama", LoraSpec(rank=2, dropout=0.3))
    install_packed_forward(model)
    b = _batch(tok, packed=True)["packed"]
    model.train()
    assert not torch.allclose(model(packed_batch=b), model(packed_batch=b))
    model.eval()
    assert torch.equal(model(packed_batch=b), model(packed_batch=b))


def test_pack_chunks_lays_out_real_tokens_chunk_by_chunk():
    seqs = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    chunks = length_chunks([len(s) for s in seqs], 6, call_overhead=1)
    p = pack_chunks(seqs, chunks)
    assert p["ids"].numel() == sum(map(len, seqs))
    flat = [i for c in chunks for i in c]
    assert p["index"].tolist() == flat
    assert p["ids"][p["last"]].tolist() == [seqs[i][-1] for i in flat]
    for c in p["chunks"]:  # the padded slot of every token lies in its own row, in order
        rows = (c["dst"] // c["width"]).tolist()
        assert rows == sorted(rows) and max(rows) == c["rows"] - 1


def test_models_the_packed_forward_does_not_cover_say_why():
    tok = tiny_tokenizer()
    neox = apply_lora(random_reranker("tiny-gpt-neox", pad_token_id=tok.pad_token_id), LoraSpec(rank=2))
    assert "gpt_neox" in packed_support(neox)
    dora = apply_lora(random_reranker("tiny-llama", pad_token_id=tok.pad_token_id), LoraSpec(rank=2, variant="dora"))
    assert "DoRA" in packed_support(dora)
    with pytest.raises(ValueError, match="does not cover"):
        install_packed_forward(neox)


def test_choose_forward_auto_explicit_and_refused():
    from lorank.train.config import TrainConfig
    from lorank.train.run import choose_forward

    tok = tiny_tokenizer()
    llama = apply_lora(random_reranker("tiny-llama", pad_token_id=tok.pad_token_id), LoraSpec(rank=2))
    neox = apply_lora(random_reranker("tiny-gpt-neox", pad_token_id=tok.pad_token_id), LoraSpec(rank=2))
    cfg = lambda **kw: TrainConfig.from_dict({"data": [{"kind": "trec", "path": "dl20"}], **kw})  # noqa: E731
    assert choose_forward(cfg(), llama, "none", cuda=False) == ("packed", "auto: CPU, model covered")
    kind, why = choose_forward(cfg(), llama, "full", cuda=False)
    assert kind == "hf" and "gradient_checkpointing: full" in why
    kind, why = choose_forward(cfg(grad_cache=True), llama, "none", cuda=False)
    assert kind == "hf" and "grad_cache" in why
    assert choose_forward(cfg(), neox, "none", cuda=False)[0] == "hf"
    assert choose_forward(cfg(forward="hf"), llama, "none", cuda=False) == ("hf", "set in the config")
    with pytest.raises(ConfigError, match="forward: packed is not available"):
        choose_forward(cfg(forward="packed"), neox, "none", cuda=False)


def test_a_run_trained_with_one_forward_is_not_resumed_with_the_other(tmp_path):
    from lorank.layout.checkpoints import COMPLETE_MARKER
    from lorank.train.resume import check_resumable

    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    ident = {"lr": 1e-3}
    (ckpt / COMPLETE_MARKER).write_text(json.dumps({"resume_identity": ident}))  # written before `forward` existed
    check_resumable(ckpt, {**ident, "forward": "hf"})
    with pytest.raises(ConfigError, match="forward: 'hf' -> 'packed'"):
        check_resumable(ckpt, {**ident, "forward": "packed"})
