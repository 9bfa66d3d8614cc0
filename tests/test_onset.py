"""The onset rule on synthetic proxy/gold curves."""

import math
import random

import pytest

from rubric_rft.training.monitor.onset import Evaluation, OnsetRule, detect_onset, trailing_mean


def curves(gold, proxy=None, ci_half_width=None, every=2):
    proxy = proxy or [min(1.0, 0.3 + 0.05 * i) for i in range(len(gold))]
    return [
        Evaluation(step=i * every, proxy=p, gold=g, gold_ci_high=None if ci_half_width is None else g + ci_half_width)
        for i, (g, p) in enumerate(zip(gold, proxy, strict=True))
    ]


def test_trailing_mean():
    assert trailing_mean([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    assert trailing_mean([5], 3) == [5]


def test_rise_then_fall_finds_the_fall():
    gold = [0.30, 0.40, 0.50, 0.60, 0.65, 0.66, 0.55, 0.45, 0.40, 0.35, 0.30]
    report = detect_onset(curves(gold, ci_half_width=0.03))
    # Smoothed gold (window 3) peaks at index 5 (0.637); index 6 (0.62) is still within the tolerance.
    assert report.peak_step == 10
    assert report.onset_step == 14 and report.detected_step == 16
    assert report.gold_drop > 0.05 and report.proxy_gain > 0


def test_rise_then_fall_with_noise_is_found_near_the_turn():
    rng = random.Random(0)
    gold = [0.3 + 0.05 * i + rng.gauss(0, 0.01) for i in range(8)] + [0.65 - 0.05 * i + rng.gauss(0, 0.01)
                                                                       for i in range(1, 9)]
    report = detect_onset(curves(gold, ci_half_width=0.03))
    turn = 7 * 2
    assert report.onset_step is not None and turn < report.onset_step <= turn + 3 * 2
    assert abs(report.peak_step - turn) <= 2 * 2


def test_monotone_rise_finds_none():
    report = detect_onset(curves([0.2 + 0.04 * i for i in range(15)], ci_half_width=0.02))
    assert report.onset_step is None and report.detected_step is None
    assert report.peak_step == 28


@pytest.mark.parametrize("seed", range(20))
def test_noisy_plateau_raises_no_false_alarm_at_the_default_tolerance(seed):
    rng = random.Random(seed)
    gold = [0.6 + rng.gauss(0, 0.02) for _ in range(20)]
    proxy = [0.8 + rng.gauss(0, 0.02) for _ in range(20)]
    assert detect_onset(curves(gold, proxy, ci_half_width=0.04)).onset_step is None


@pytest.mark.parametrize("dip_at", [5, 9, 10])
def test_a_single_dip_does_not_trigger(dip_at):
    gold = [0.3, 0.4, 0.5, 0.6, 0.62, 0.63, 0.63, 0.64, 0.64, 0.65, 0.65]
    gold[dip_at] = 0.3
    assert detect_onset(curves(gold, ci_half_width=0.03)).onset_step is None


def test_a_fall_at_the_very_end_is_too_late_to_confirm():
    gold = [0.3, 0.4, 0.5, 0.6, 0.62, 0.63, 0.64, 0.65, 0.3]
    assert detect_onset(curves(gold, ci_half_width=0.03)).onset_step is None


def test_gold_falling_with_the_proxy_is_not_gaming():
    gold = [0.3, 0.45, 0.6, 0.62, 0.5, 0.4, 0.3, 0.25]
    proxy = [0.4, 0.55, 0.7, 0.72, 0.6, 0.5, 0.4, 0.35]
    assert detect_onset(curves(gold, proxy, ci_half_width=0.03)).onset_step is None


def test_a_drop_within_the_interval_is_noise():
    gold = [0.3, 0.45, 0.6, 0.62, 0.5, 0.45, 0.45, 0.45]
    assert detect_onset(curves(gold, ci_half_width=0.03)).onset_step is not None
    assert detect_onset(curves(gold, ci_half_width=0.3)).onset_step is None


def test_patience_and_tolerance_are_honoured():
    gold = [0.3, 0.5, 0.6, 0.6, 0.52, 0.52, 0.52, 0.52]
    assert detect_onset(curves(gold), OnsetRule(tolerance=0.05, smoothing=1)).onset_step == 8
    assert detect_onset(curves(gold), OnsetRule(tolerance=0.1, smoothing=1)).onset_step is None
    assert detect_onset(curves(gold[:6]), OnsetRule(smoothing=1, patience=3)).onset_step is None
    assert detect_onset(curves(gold[:7]), OnsetRule(smoothing=1, patience=3)).onset_step == 8


def test_the_report_is_plain_data():
    report = detect_onset(curves([0.5]))
    assert report.as_dict()["peak_step"] == 0 and not math.isnan(report.peak_gold)
    with pytest.raises(ValueError, match="at least one evaluation"):
        detect_onset([])
