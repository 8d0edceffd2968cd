"""lorank.models.attention: the SDPA backend choice (torch.backends.cuda mocked: no GPU here)."""
import pytest
import torch

from lorank.errors import ConfigError
from lorank.models.attention import ENABLED, apply_attention_backend, enabled_kernels, resolve_attention_backend


class FakeBackends:
    """torch.backends.cuda's four SDPA switches, all on (torch's default)."""

    def __init__(self, with_cudnn=True):
        self.on = {"flash": True, "efficient": True, "math": True, "cudnn": True}
        for k, name in (("flash", "flash_sdp"), ("efficient", "mem_efficient_sdp"), ("math", "math_sdp"),
                        ("cudnn", "cudnn_sdp")):
            if k == "cudnn" and not with_cudnn:
                self.on.pop(k)
                continue
            setattr(self, f"enable_{name}", lambda v, k=k: self.on.__setitem__(k, bool(v)))
            setattr(self, f"{name}_enabled", lambda k=k: self.on[k])


def test_auto_picks_flash_on_ampere_or_newer_in_half_precision_else_efficient():
    assert resolve_attention_backend("auto", "cuda", (9, 0), torch.bfloat16) == "flash"
    assert resolve_attention_backend("auto", "cuda", (8, 0), torch.float16) == "flash"
    assert resolve_attention_backend("auto", "cuda", (7, 0), torch.bfloat16) == "efficient"
    assert resolve_attention_backend("auto", "cuda", (9, 0), torch.float32) == "efficient"
    assert resolve_attention_backend("cudnn", "cuda", (9, 0)) == "cudnn"
    assert resolve_attention_backend("auto", "cpu") is None and resolve_attention_backend("flash", "cpu") is None
    with pytest.raises(ConfigError, match="unknown attention_backend 'fast'"):
        resolve_attention_backend("fast", "cuda", (9, 0))


@pytest.mark.parametrize("name", ["auto", "flash", "efficient", "math", "cudnn"])
def test_apply_sets_exactly_the_chosen_kernels(name):
    fake = FakeBackends()
    rec = apply_attention_backend(name, "cuda", torch.bfloat16, backends=fake, capability=(9, 0))
    applied = "flash" if name == "auto" else name
    assert rec["requested"] == name and rec["applied"] == applied
    assert sorted(rec["enabled"]) == sorted(ENABLED[applied])
    assert {k for k, v in fake.on.items() if v} == set(ENABLED[applied])
    assert fake.on["math"]  # always a fallback
    assert fake.on["cudnn"] == (name == "cudnn")  # the per-shape planner only when asked for


def test_apply_is_a_no_op_off_cuda():
    fake = FakeBackends()
    assert apply_attention_backend("auto", "cpu", backends=fake) == {"requested": "auto", "applied": None,
                                                                     "enabled": []}
    assert all(fake.on.values())


def test_a_torch_without_the_cudnn_switch():
    fake = FakeBackends(with_cudnn=False)
    assert sorted(apply_attention_backend("auto", "cuda", backends=fake, capability=(9, 0))["enabled"]) == \
        ["efficient", "flash", "math"]
    with pytest.raises(ConfigError, match="no enable_cudnn_sdp"):
        apply_attention_backend("cudnn", "cuda", backends=fake, capability=(9, 0))
    assert enabled_kernels(fake) == ["flash", "efficient", "math"]


def test_auto_reads_the_device_capability(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: seen.append(d) or (7, 5))
    rec = apply_attention_backend("auto", "cuda", torch.bfloat16, backends=FakeBackends())
    assert rec["applied"] == "efficient" and seen


def test_train_config_execution_settings():
    from lorank.train.config import TrainConfig

    base = {"data": [{"kind": "trec", "path": "dl20"}]}
    cfg = TrainConfig.from_dict(base)
    assert cfg.attention_backend == "auto" and cfg.chunk_tokens == "auto"
    assert cfg.resolved_chunk_tokens(cuda=False) == 4096 and cfg.resolved_chunk_tokens(cuda=True) == 16384
    assert cfg.resolved_optim(True) == "adamw_torch_fused" and cfg.resolved_optim(False) == "adamw_torch"
    assert cfg.resolved_log_every(True) == 10 and cfg.resolved_log_every(False) == 1
    assert cfg.resolved_shape_buckets(True) and not cfg.resolved_shape_buckets(False)
    # defaults leave a study's run hash as it was before these settings existed
    ident = cfg.identity()
    assert "attention_backend" not in ident and ident["chunk_tokens"] == 4096
    assert TrainConfig.from_dict({**base, "attention_backend": "math"}).identity()["attention_backend"] == "math"
    for bad in ({"attention_backend": "fast"}, {"chunk_tokens": 0}, {"log_every": "often"}, {"optim": "sgd"}):
        with pytest.raises(ConfigError):
            TrainConfig.from_dict({**base, **bad})


def test_scorer_applies_the_backend_once_on_cuda_only(monkeypatch):
    import lorank.models.attention as att
    from lorank.models.random_init import random_reranker
    from lorank.inference.engine import Scorer

    calls = []
    monkeypatch.setattr(att, "applied_backend", lambda: None)
    monkeypatch.setattr(att, "apply_attention_backend", lambda name, dev, dtype: calls.append((name, str(dev)))
                        or {"requested": name, "applied": "flash", "enabled": []})
    sc = Scorer(random_reranker("tiny-llama", pad_token_id=1), None, 1, bf16=False)
    sc.score_ids([[5, 6, 7]])
    assert calls == [] and sc.attention is None  # CPU: torch's flags untouched
    monkeypatch.setattr(Scorer, "device", property(lambda self: torch.device("cuda")))
    sc._apply_attention()  # what score_ids calls first
    sc._apply_attention()
    assert calls == [("auto", "cuda")] and sc.attention["applied"] == "flash"
    chosen = {"requested": "math", "applied": "math", "enabled": ["math"]}
    monkeypatch.setattr(att, "applied_backend", lambda: chosen)  # e.g. lorank train's attention_backend: math
    sc2 = Scorer(sc.model, None, 1, bf16=False)
    sc2._apply_attention()
    assert sc2.attention is chosen and len(calls) == 1


def test_pinned_batches_are_copied_without_blocking(tmp_path, monkeypatch):
    from transformers import TrainingArguments

    from lorank.models.random_init import random_reranker
    from lorank.train.losses import get_loss
    from lorank.train.trainer import RerankTrainer

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    tr = RerankTrainer(model=random_reranker("tiny-llama", pad_token_id=1), args=args,
                       loss_fn=get_loss("contrastive"), data_collator=lambda x: x)
    seen = []

    class Pinned(torch.Tensor):
        def is_pinned(self, *a):
            return True

        def to(self, *a, **kw):
            seen.append(kw.get("non_blocking"))
            return torch.Tensor(self)

    monkeypatch.setattr(TrainingArguments, "device", property(lambda self: torch.device("cuda")))
    t = torch.zeros(3).as_subclass(Pinned)
    tr._prepare_input({"chunks": [{"input_ids": t}]})
    assert seen == [True]
