import math

import pytest

from lorank.evaluation.significance import holm, holm_adjust, paired_ttest


def test_holm_hand_worked_example():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> max(0.06, .04) = 0.06)
    p = [0.01, 0.04, 0.03, 0.005]
    adjusted, reject = holm(p, alpha=0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # step-down: 0.005 <= .05/4 yes, 0.01 <= .05/3 yes, 0.03 <= .05/2 no -> stop
    assert reject == [True, False, False, True]


def test_holm_caps_at_one_and_is_monotone():
    adjusted = holm_adjust([0.5, 0.2, 0.9])
    assert adjusted == pytest.approx([1.0, 0.6, 1.0])
    assert holm_adjust([0.03]) == [0.03]
    assert holm_adjust([]) == []


def test_holm_leaves_nan_out_of_the_family():
    adjusted, reject = holm([0.02, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert reject == [True, False, True]


def test_holm_rejects_bad_pvalues():
    with pytest.raises(ValueError):
        holm_adjust([1.5])


def test_paired_ttest_closed_form():
    # differences 1, 2, 3: t = 2*sqrt(3), df = 2, two-sided p = 1 - sqrt(t^2 / (t^2 + 2)) = 1 - sqrt(6/7)
    p = paired_ttest([2, 4, 6], [1, 2, 3])
    assert p == pytest.approx(1 - math.sqrt(6 / 7), rel=1e-9)


def test_paired_ttest_degenerate_cases():
    assert paired_ttest([0.1, 0.5, 0.7], [0.1, 0.5, 0.7]) == 1.0
    assert paired_ttest([1.1, 2.1, 3.1], [1.0, 2.0, 3.0]) == 0.0  # constant shift: t is infinite
    assert math.isnan(paired_ttest([1.0], [0.0]))
    with pytest.raises(ValueError):
        paired_ttest([1, 2], [1, 2, 3])
