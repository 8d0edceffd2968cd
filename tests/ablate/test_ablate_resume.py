"""An interrupted ablation sweep goes on from its saved chunks (lorank.ablate.resume), never from another adapter's."""
import logging

import numpy as np
import pytest
import torch

from lorank.ablate.engine import score_configs
from lorank.ablate.sweeps import BASE, build_sweep
from tests.ablate.test_ablate_masks import _trained

SEQS = [list(range(5, 5 + n)) for n in (4, 9, 7, 12, 3, 15, 6, 11)]


class Stop(Exception):
    pass


def _interrupt_after(chunks: int):
    seen = []

    def tick(n):
        seen.append(n)
        if len(seen) == chunks:
            raise Stop

    return tick


def test_an_interrupted_sweep_goes_on_and_equals_an_uninterrupted_one(tmp_path):
    pm = _trained("tiny-llama")
    cfgs = [BASE] + build_sweep("components", pm) + build_sweep("layers-leave-one-out", pm)
    whole = score_configs(pm, SEQS, 1, cfgs, batch_tokens=24)  # small budget: several chunks
    state = tmp_path / "s.npz"
    with pytest.raises(Stop):
        score_configs(pm, SEQS, 1, cfgs, batch_tokens=24, state=state, save_every_s=0, progress=_interrupt_after(2))
    assert state.is_file()
    ticks = []
    resumed = score_configs(pm, SEQS, 1, cfgs, batch_tokens=24, state=state, save_every_s=0, progress=ticks.append)
    for name in whole.scores:
        np.testing.assert_array_equal(resumed.scores[name], whole.scores[name], err_msg=name)
    assert sum(ticks) == len(SEQS)  # the saved chunks count as done at once, the rest one by one
    assert resumed.layer_calls == whole.layer_calls and resumed.naive_layer_calls == whole.naive_layer_calls
    # a finished state: nothing is computed again
    calls = []
    hook = pm.register_forward_hook(lambda *a: calls.append(1))
    again = score_configs(pm, SEQS, 1, cfgs, batch_tokens=24, state=state)
    hook.remove()
    assert calls == [] and all(np.array_equal(again.scores[n], whole.scores[n]) for n in whole.scores)


def test_a_state_of_other_weights_or_settings_is_not_used(tmp_path, caplog):
    pm = _trained("tiny-llama")
    cfgs = [BASE] + build_sweep("components", pm)
    state = tmp_path / "s.npz"
    score_configs(pm, SEQS, 1, cfgs, batch_tokens=24, state=state)
    with torch.no_grad():  # another adapter: its LoRA weights differ
        next(p for n, p in pm.named_parameters() if "lora_A" in n).add_(0.5)
    fresh = score_configs(pm, SEQS, 1, cfgs, batch_tokens=24)
    caplog.set_level(logging.WARNING, logger="lorank.ablate")
    reused = score_configs(pm, SEQS, 1, cfgs, batch_tokens=24, state=state)
    assert "other settings or weights" in caplog.text
    for name in fresh.scores:
        np.testing.assert_array_equal(reused.scores[name], fresh.scores[name])
    caplog.clear()
    score_configs(pm, SEQS, 1, cfgs, batch_tokens=32, state=state)  # another chunking budget
    assert "other settings or weights" in caplog.text
    state.write_bytes(b"not an npz")
    caplog.clear()
    score_configs(pm, SEQS, 1, cfgs, batch_tokens=32, state=state)
    assert "unreadable sweep state" in caplog.text


def test_a_sweep_begun_unmerged_goes_on_unmerged(tmp_path):
    """A state saved by an unmerged sweep (as before merging existed) is continued unmerged under the default,
    so one sweep never mixes the two numerics; asked explicitly to merge, it starts again."""
    pm = _trained("tiny-llama")
    cfgs = [BASE] + build_sweep("components", pm)
    whole = score_configs(pm, SEQS, 1, cfgs, batch_tokens=24, merge_lora=False)
    state = tmp_path / "s.npz"
    with pytest.raises(Stop):
        score_configs(pm, SEQS, 1, cfgs, batch_tokens=24, state=state, save_every_s=0, progress=_interrupt_after(2),
                      merge_lora=False)
    calls = []
    hook = pm.register_forward_hook(lambda *a: calls.append(1))
    resumed = score_configs(pm, SEQS, 1, cfgs, batch_tokens=24, state=state, save_every_s=0)
    n_resumed = len(calls)
    fresh = score_configs(pm, SEQS, 1, cfgs, batch_tokens=24, state=state, merge_lora=True)
    hook.remove()
    assert not resumed.merged and fresh.merged
    for name in whole.scores:
        np.testing.assert_array_equal(resumed.scores[name], whole.scores[name], err_msg=name)
    assert 0 < n_resumed < len(calls) - n_resumed  # the resumed sweep skipped its saved chunk; the merged one did not
