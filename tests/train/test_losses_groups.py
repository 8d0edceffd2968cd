import pytest
import torch

from lorank.data.records import Passage
from lorank.train.groups import GroupDataset, QueryPool, pools_from_examples, pools_from_triples
from lorank.train.losses import LOSSES, NEEDS_TEACHER, get_loss


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_prefers_the_positive_first(name):
    loss = get_loss(name)
    teacher = torch.tensor([[3.0, 1.0, 0.5, 0.0]])
    good = torch.tensor([[4.0, 1.0, 0.0, -1.0]])
    bad = torch.tensor([[-1.0, 1.0, 0.0, 4.0]])
    t = teacher if name in NEEDS_TEACHER else None
    assert loss(good, t).item() < loss(bad, t).item()
    s = bad.clone().requires_grad_(True)
    loss(s, t).backward()
    assert s.grad[0, 0] < 0  # the gradient pushes the positive's score up


def test_contrastive_is_softmax_cross_entropy():
    s = torch.tensor([[2.0, 1.0, 0.0]])
    expected = -torch.log_softmax(s, -1)[0, 0]
    assert torch.isclose(get_loss("contrastive")(s), expected)


def test_distill_needs_teacher_scores():
    with pytest.raises(ValueError, match="teacher"):
        get_loss("distill_kl")(torch.zeros(1, 3), None)


def _pool(n_neg=20):
    return QueryPool("q", "query", [Passage("p0", "pos0"), Passage("p1", "pos1")],
                     [Passage(f"n{i}", f"neg{i}") for i in range(n_neg)])


def test_groups_have_one_positive_then_distinct_negatives_and_change_each_epoch():
    ds = GroupDataset([_pool()], group_size=8, seed=3)
    assert len(ds) == 2  # one group per positive
    g0 = ds[0]
    assert g0.passages[0].pid == "p0"
    negs = [p.pid for p in g0.passages[1:]]
    assert len(set(negs)) == 7 and all(n.startswith("n") for n in negs)
    again = [p.pid for p in ds[0].passages[1:]]
    assert again == negs  # deterministic for (seed, epoch, index)
    ds.set_epoch(1)
    assert [p.pid for p in ds[0].passages[1:]] != negs


def test_small_pools_sample_negatives_with_replacement():
    ds = GroupDataset([_pool(n_neg=2)], group_size=6, seed=0, unit="query")
    assert len(ds) == 1 and len(ds[0].passages) == 6


def test_pools_from_the_shared_training_files(shared_data):
    from lorank.data import iter_hardneg, iter_triples

    hard = pools_from_examples(iter_hardneg(shared_data / "msmarco-train-sample" / "hardneg.jsonl"))
    assert len(hard) == 10 and all(p.positive_scores and p.negative_scores for p in hard)
    g = GroupDataset(hard, group_size=8)[0]
    assert g.teacher is not None and len(g.teacher) == 8
    trip = pools_from_triples(iter_triples(shared_data / "msmarco-train-sample" / "triples.tsv"))
    assert sum(len(p.positives) for p in trip) >= 1 and all(p.negatives for p in trip)
