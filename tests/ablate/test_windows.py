"""Finding 4's target window and the layer-windows sweep (lorank.ablate.windows): a declared window is parsed or
refused with the field named, the sweep scores it beside its regular windows (and no longer the paper's L5-15 when
another one is declared), and the plan's count of the sweep's configurations follows the sweep."""
from __future__ import annotations

import pytest

from lorank.ablate.sweeps import build_sweep
from lorank.ablate.windows import (PAPER_WINDOW, config_window, layer_windows, paper_window_text, parse_window,
                                   window_config, window_label)
from lorank.errors import ConfigError
from lorank.lora import LoraSpec, apply_lora
from lorank.models.random_init import random_reranker
from lorank.study.cost import window_count


@pytest.mark.parametrize("value", ["3-9", " 3 - 9 ", [3, 9], (3, 9)])
def test_a_window_is_read_from_a_range_or_a_pair(value):
    assert parse_window(value) == (3, 9)


@pytest.mark.parametrize("value, problem", [
    ("a-b", "'a-b' is not a layer window: give 'first-last'"), ("3", "'3' is not a layer window"),
    ([3], "[3] is not a layer window"), ([1, 2, 3], "is not a layer window"), ([True, 2], "is not a layer window"),
    ("9-3", "'9-3': the window ends (layer 3) before it starts (layer 9)"), ([-1, 3], "a layer number is 0 or more")])
def test_a_bad_window_is_refused_naming_the_field_and_the_problem(value, problem):
    with pytest.raises(ConfigError) as e:
        parse_window(value)
    assert str(e.value).startswith("verdicts.target_window: ") and problem in str(e.value)
    with pytest.raises(ConfigError, match="^--target-window: "):
        parse_window(value, "--target-window")


def test_labels_and_texts_come_from_the_window():
    assert (window_label((3, 9)), window_config((3, 9)), config_window("only L3-9")) == ("L3-9", "only L3-9", (3, 9))
    assert config_window("only up_proj") is None and config_window("only L3") is None
    assert paper_window_text(PAPER_WINDOW) == "the paper's layers 5-15"
    assert paper_window_text((3, 9)) == "the paper's layers 5-15 (declared here: L3-9)"


def test_the_regular_windows_and_the_target_appended_when_it_is_not_one_of_them():
    thirty, eighteen = list(range(30)), list(range(18))
    regular18 = [(0, 6), (3, 9), (6, 12), (9, 15), (11, 17)]
    # SmolLM2's 30 layers, windows of 11: the paper's 5-15 is one of them
    assert layer_windows(thirty, 11) == [(0, 10), (5, 15), (10, 20), (15, 25), (19, 29)]
    # Gemma's 18, windows of 7: L3-9 is one (the same depth as 5-15 of 30); the paper's literal 5-15 is appended
    # only while it is the target
    assert layer_windows(eighteen, 7) == regular18 + [PAPER_WINDOW]
    assert layer_windows(eighteen, 7, target=(3, 9)) == regular18
    assert layer_windows(eighteen, 7, target=(4, 10)) == regular18 + [(4, 10)]
    # a target past the adapted layers is not scored (a 4-layer model and the paper's 5-15)
    assert layer_windows(list(range(4)), 2) == [(0, 1), (1, 2), (2, 3)]
    assert layer_windows(list(range(4)), 2, target=(2, 4)) == [(0, 1), (1, 2), (2, 3)]


def test_the_sweep_scores_the_declared_window_and_the_plan_counts_it():
    pm = apply_lora(random_reranker("tiny-llama", num_hidden_layers=18, hidden_size=32, intermediate_size=64),
                    LoraSpec(rank=2, alpha=4, dropout=0.0))
    default = [c.name for c in build_sweep("layer-windows", pm, window=7)]
    assert default[-1] == "only L5-15" and len(default) == 6 == window_count(18, 7)
    declared = build_sweep("layer-windows", pm, window=7, target=(4, 10))
    assert [c.name for c in declared] == default[:-1] + ["only L4-10"] and len(declared) == window_count(18, 7, (4, 10))
    assert declared[-1].masks[0].layers == "4-10" and declared[-1].masks[0].op == "keep"
    assert len(build_sweep("layer-windows", pm, window=7, target=(3, 9))) == 5 == window_count(18, 7, (3, 9))
