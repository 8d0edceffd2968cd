import random

from lorank.train.collator import length_chunks


def test_length_chunks_cover_every_index_once_within_budget():
    rng = random.Random(0)
    lengths = [rng.randint(20, 196) for _ in range(64)]
    chunks = length_chunks(lengths, 2048)
    flat = sorted(i for c in chunks for i in c)
    assert flat == list(range(64))
    for c in chunks:
        assert len(c) == 1 or len(c) * max(lengths[i] for i in c) <= 2048


def test_length_chunks_waste_less_padding_than_one_padded_batch():
    rng = random.Random(1)
    lengths = [rng.randint(30, 196) for _ in range(32)]
    chunks = length_chunks(lengths, 8192)
    padded = sum(len(c) * max(lengths[i] for i in c) for c in chunks)
    assert padded < 0.8 * len(lengths) * max(lengths)
    assert padded >= sum(lengths)


def test_length_chunks_single_long_row_and_empty():
    assert length_chunks([500], 100) == [[0]]
    assert length_chunks([], 100) == []
