import pytest
import torch

from lorank.errors import ConfigError
from lorank.lora import LoraSpec, apply_lora, parse_alpha, parse_layers
from lorank.models.arch import arch_for
from lorank.models.random_init import random_reranker

SHAPES = ["tiny-llama", "tiny-mistral", "tiny-gpt-neox"]


def lora_modules(model):
    arch = arch_for(model.config)
    found = set()
    for name, _ in model.named_modules():
        if name.endswith(".lora_A"):
            parsed = arch.parse(name.rsplit(".lora_A", 1)[0])
            assert parsed is not None, name
            found.add(parsed)
    return found


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("components,layers", [("all", "all"), ("mha", "1-2"), ("mlp", "0,3")])
def test_lora_targets_exactly_the_intended_modules(shape, components, layers):
    model = random_reranker(shape)
    arch = arch_for(model.config)
    spec = LoraSpec(rank=2, components=components, layers=layers)
    pm = apply_lora(model, spec)
    want_layers = parse_layers(layers, 4)
    want = {(layer, p) for layer in want_layers for p in arch.projections_of(components)}
    assert lora_modules(pm) == want
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert any("score" in n for n in trainable), "the score head is always trained"
    assert all("lora_" in n or "score" in n for n in trainable)


@pytest.mark.parametrize("shape,alias,expected", [
    ("tiny-llama", "mlp.up", {"up_proj"}), ("tiny-mistral", "attn.q", {"q_proj"}),
    ("tiny-gpt-neox", "mlp.down", {"dense_4h_to_h"}), ("tiny-gpt-neox", "attn.o", {"dense"}),
])
def test_projection_aliases_map_across_families(shape, alias, expected):
    pm = apply_lora(random_reranker(shape), LoraSpec(rank=1, projections=[alias], layers=[2]))
    assert lora_modules(pm) == {(2, p) for p in expected}


def test_variants_and_alpha():
    cfg = random_reranker("tiny-llama").config
    assert LoraSpec(variant="dora").to_peft(cfg).use_dora
    assert LoraSpec(variant="rslora").to_peft(cfg).use_rslora
    assert LoraSpec(rank=4, alpha="8r").to_peft(cfg).lora_alpha == 32
    assert parse_alpha(64, 8) == 64


@pytest.mark.parametrize("fields,msg", [
    ({"rank": 0}, "rank"),
    ({"layers": "7-3"}, "empty layer range"),
    ({"layers": "2-9"}, "outside"),
    ({"projections": ["dense_h_to_4h"]}, "unknown projection"),
    ({"components": "mha", "projections": ["up_proj"]}, "not part of"),
    ({"variant": "qlora"}, "variant"),
])
def test_bad_specs_give_clear_errors(fields, msg):
    """A bad value is refused when the spec is made (as in a config), a bad target when it meets the model."""
    with pytest.raises(ConfigError, match=msg):
        LoraSpec.from_dict(fields).targets(random_reranker("tiny-llama").config)


def test_unknown_family_explains_how_to_register():
    with pytest.raises(ConfigError, match="register_arch"):
        arch_for("mamba")


@pytest.mark.parametrize("shape", SHAPES)
def test_a_few_steps_reduce_the_contrastive_loss(shape):
    from lorank.train.losses import get_loss

    torch.manual_seed(0)
    pm = apply_lora(random_reranker(shape), LoraSpec(rank=4, alpha=8, dropout=0.0))
    pm.train()
    ids = torch.randint(3, 300, (12, 10))
    ids[0::4, 2:6] = 7  # the positives (column 0 of each group of 4) share a pattern
    mask = torch.ones_like(ids)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=5e-3)
    loss_fn = get_loss("contrastive")
    losses = []
    for _ in range(8):
        scores = pm(input_ids=ids, attention_mask=mask).logits.view(3, 4)
        loss = loss_fn(scores)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7, losses
