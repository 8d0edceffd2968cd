"""Known traps of LoRA reranker training, each handled and tested."""
import pytest
import torch

from lorank.errors import LorankError
from lorank.lora import LoraSpec, apply_lora
from lorank.models.random_init import random_reranker, tiny_tokenizer


def test_gradient_checkpointing_still_trains_lora():
    pm = apply_lora(random_reranker("tiny-llama"), LoraSpec(rank=2, dropout=0.0))
    pm.enable_input_require_grads()
    pm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    pm.train()
    # make B non-zero so that A receives gradient as well
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    out = pm(input_ids=torch.randint(3, 300, (2, 8))).logits.sum()
    out.backward()
    grads = [p.grad for n, p in pm.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_empty_adapter_is_detected(tmp_path):
    from safetensors.torch import save_file

    from lorank.train.callbacks import check_adapter_nonempty

    save_file({"base_model.model.score.weight": torch.zeros(1, 4)}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(LorankError, match="ZeRO-3"):
        check_adapter_nonempty(tmp_path)
    save_file({"x.lora_A.weight": torch.zeros(0, 4)}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(LorankError, match="empty adapter"):
        check_adapter_nonempty(tmp_path)


def test_score_is_read_at_the_last_real_token_even_with_pad_equal_to_eos_in_tokenizer():
    from lorank.models.inputs import PairEncoder
    from lorank.models.loading import pin_pad_token

    tok = tiny_tokenizer()
    tok.pad_token = tok.eos_token  # the trap: pad == EOS, and the template ends with EOS
    pad = pin_pad_token(tok)
    model = random_reranker("tiny-llama", pad_token_id=pad)
    ids = PairEncoder(tok).encode("flea", "a flea lives a year")
    assert ids[-1] == tok.eos_token_id
    padded = torch.tensor([ids + [pad] * 5])
    mask = torch.tensor([[1] * len(ids) + [0] * 5])
    a = model(input_ids=torch.tensor([ids])).logits.item()
    b = model(input_ids=padded, attention_mask=mask).logits.item()
    assert abs(a - b) < 1e-5


def test_yes_no_head_equals_the_lm_logit_difference(tmp_path):
    from transformers import AutoModelForCausalLM

    from lorank.models.loading import load_reranker
    from tests.tinydata import save_tiny_model

    path = save_tiny_model(tmp_path / "m")
    lm = load_reranker(str(path), head_init="yes_no", dtype="fp32")
    causal = AutoModelForCausalLM.from_pretrained(path)
    tok = lm.tokenizer
    yes, no = (tok(w, add_special_tokens=False).input_ids[0] for w in (" yes", " no"))
    ids = torch.tensor([tok("query: flea document: a flea</s>").input_ids])
    logits = causal(input_ids=ids).logits[0, -1]
    score = lm.model(input_ids=ids).logits.item()
    assert abs(score - (logits[yes] - logits[no]).item()) < 1e-4


def test_ddp_settings_are_safe_for_lora():
    import inspect

    from lorank.train import run

    src = inspect.getsource(run._training_args)  # the HF arguments train() runs under
    assert "ddp_find_unused_parameters=False" in src
