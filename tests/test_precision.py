"""The one precision decision (lorank.precision): $LORANK_BF16, then the hardware; used by every path."""
import pytest

from lorank import precision
from lorank.errors import ConfigError


@pytest.mark.parametrize("value,want", [("1", True), ("bf16", True), ("true", True), ("0", False), ("fp32", False),
                                        ("off", False), ("auto", None), ("", None)])
def test_env_override_values(monkeypatch, value, want):
    monkeypatch.setenv("LORANK_BF16", value)
    assert precision.bf16_override() is want


def test_bad_env_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LORANK_BF16", "maybe")
    with pytest.raises(ConfigError, match="LORANK_BF16='maybe' is not a precision setting: use 0"):
        precision.decide()


def test_order_explicit_then_env_then_hardware(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_capability", lambda: "AVX512-BF16")
    monkeypatch.delenv("LORANK_BF16", raising=False)
    d = precision.decide(None, "cpu")
    assert d.bf16 and d.reason == "auto: CPU with AVX512-BF16" and d.name == "bf16"
    monkeypatch.setenv("LORANK_BF16", "0")
    assert precision.decide(None, "cpu").bf16 is False
    assert precision.decide(True, "cpu").bf16 is True and precision.decide(True).reason == "set explicitly"
    monkeypatch.setattr(precision, "cpu_bf16_capability", lambda: None)
    monkeypatch.delenv("LORANK_BF16")
    d = precision.decide(None, "cpu")
    assert not d.bf16 and "without AVX512-BF16/AMX" in d.reason


def test_training_dtype_and_scorer_follow_the_same_decision(monkeypatch):
    from lorank.models.loading import resolve_dtype_name
    from lorank.models.random_init import random_reranker, tiny_tokenizer
    from lorank.reranker import Reranker

    tok = tiny_tokenizer()
    model = random_reranker("tiny-llama", pad_token_id=tok.pad_token_id)
    for env, name in (("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv("LORANK_BF16", env)
        assert resolve_dtype_name("auto") == name and resolve_dtype_name("fp32") == "fp32"
        rr = Reranker(model, tok)
        assert rr.scorer.precision == name and rr.scorer.describe()["reason"] == f"LORANK_BF16={env}"
    import torch

    monkeypatch.setenv("LORANK_BF16", "0")
    rr = Reranker(model.to(torch.bfloat16), tok)
    assert rr.scorer.bf16 is False and rr.scorer.precision == "bf16"  # bf16 weights compute in bf16: reported so


@pytest.mark.parametrize("flags, want", [("fpu avx2 avx512f avx512_bf16 amx_bf16", "AMX"),
                                         ("fpu avx2 avx512f avx512_bf16", "AVX512-BF16"),
                                         ("fpu avx2 avx512f", "AVX-512"), ("fpu sse4_2 avx2", "AVX2"),
                                         ("fpu sse4_2", "no AVX2")])
def test_cpu_isa_names_the_widest_matrix_instructions(monkeypatch, flags, want):
    import io

    import lorank.precision as p

    info = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n"
    monkeypatch.setattr(p, "open", lambda *a, **k: io.StringIO(info), raising=False)
    assert p.cpu_isa() == want and p.cpu_model() == "Some CPU"


def test_cpu_isa_agrees_with_the_bf16_decision_on_this_cpu():
    from lorank.precision import cpu_bf16_capability, cpu_isa

    cap = cpu_bf16_capability()
    assert cpu_isa() == cap if cap else cpu_isa() in ("AVX-512", "AVX2", "no AVX2", "?")
