"""A study declares finding 4's layer window before any run (``verdicts: {target_window: "3-9"}``): the spec refuses
a bad one naming the field, the plan refuses one outside a model's known layers, and only the layer-windows steps of
a study that declares one carry it (so a study that declares none keeps its steps' hashes)."""
from __future__ import annotations

import pytest

from lorank.errors import ConfigError
from lorank.study import build_plan, find_spec, load_spec
from lorank.study.spec import VerdictSpec


def _preset(**verdicts):
    """The CPU preset (SmolLM2-135M, 30 layers; two of its six ablation steps run the layer-windows sweep)."""
    spec = load_spec(find_spec("paper-smollm2-cpu"))
    return spec.model_copy(update={"verdicts": VerdictSpec(**verdicts)}) if verdicts else spec


def _plan(spec, monkeypatch):
    monkeypatch.setenv("LORANK_BF16", "1")
    return build_plan(spec, "paper-smollm2-cpu", check_data=False, device="cpu")


@pytest.mark.parametrize("value, problem", [
    ("3to9", "verdicts.target_window: Value error, '3to9' is not a layer window: give 'first-last' (e.g. '3-9') or "
             "[first, last] (line 6)"),
    ("9-3", "verdicts.target_window: Value error, '9-3': the window ends (layer 3) before it starts (layer 9) "
            "(line 6)")])
def test_the_spec_refuses_a_bad_target_window_naming_the_field(tmp_path, value, problem):
    f = tmp_path / "spec.yaml"
    f.write_text(f"name: s\nmodels: [smollm2-135m]\ntrain: {{}}\nverdicts:\n  alpha: 0.05\n"
                 f"  target_window: {value}\n")
    with pytest.raises(ConfigError) as e:
        load_spec(f)
    assert e.value.problems == [problem]


def test_the_spec_reads_a_range_or_a_pair_and_defaults_to_the_papers():
    assert VerdictSpec().target_window == (5, 15)
    assert VerdictSpec(target_window="3-9").target_window == VerdictSpec(target_window=[3, 9]).target_window == (3, 9)


def test_the_plan_refuses_a_window_outside_a_models_layers(monkeypatch):
    spec = _preset(target_window="20-30")
    with pytest.raises(ConfigError) as e:
        _plan(spec, monkeypatch)
    assert ("verdicts.target_window: L20-30 is outside smollm2-135m's 30 layers (L0-29): declare a window within "
            "them") in e.value.problems
    gemma = spec.model_copy(update={"models": ["gemma3-270m"], "analyses": [],  # its compare names a SmolLM2 run
                                    "verdicts": VerdictSpec(target_window="3-18")})
    with pytest.raises(ConfigError, match="L3-18 is outside gemma3-270m's 18 layers"):
        _plan(gemma, monkeypatch)
    assert _plan(gemma.model_copy(update={"verdicts": VerdictSpec(target_window="3-9")}), monkeypatch).runs


def test_only_the_layer_windows_steps_of_a_declared_window_carry_it(monkeypatch):
    paper = {s.step_id: s for s in _plan(_preset(), monkeypatch).steps}
    assert not any("target_window" in s.payload for s in paper.values())
    declared = {s.step_id: s for s in _plan(_preset(target_window="4-14"), monkeypatch).steps}
    assert set(declared) == set(paper)
    windows = {k for k, s in paper.items() if "layer-windows" in s.payload.get("sweeps", [])}
    assert len(windows) == 2
    for k, s in declared.items():
        assert (s.payload.get("target_window"), s.hash != paper[k].hash) == (
            ([4, 14], True) if k in windows else (None, False)), k
    # 4-14 is not among the windows of 11 (0-10, 5-15, ...): one more configuration each, in the estimate
    assert all(s.estimate_s > paper[k].estimate_s for k, s in declared.items() if k in windows)


def test_a_declared_window_of_another_width_than_the_sweeps_is_noted(monkeypatch):
    plan = _plan(_preset(target_window="3-9"), monkeypatch)
    notes = [n for n in plan.notes if "target_window" in n]
    assert len(notes) == 2 and notes[0] == ("ablations[1]: the declared verdicts.target_window L3-9 is 7 layers "
                                            "wide, its layer windows 11: finding 4 compares the target only with "
                                            "windows of its own width")
    assert not [n for n in _plan(_preset(), monkeypatch).notes if "target_window" in n]
