"""The tail simulation: the properties the theory predicts, exact best-of-n, equal corruption, bad arguments."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rubric_rft.evaluation import theory
from rubric_rft.stats import bootstrap_mean

ROOT = Path(__file__).resolve().parent.parent
HIGH_KL = float(theory.best_of_n_kl(1024)[0])


@pytest.fixture(scope="module")
def rewards() -> np.ndarray:
    return theory.sample_rewards(20, 2000, seed=3)


def proxies(rewards: np.ndarray):
    for kind in theory.CORRUPTIONS:
        for placement in theory.PLACEMENTS:
            yield kind, placement, theory.corrupt(rewards, placement, kind, seed=5)


def gibbs_reference(r: np.ndarray, proxy: np.ndarray, beta: float) -> tuple[float, float]:
    """KL and true reward of π ∝ exp(proxy/β), written out plainly for one response set."""
    weights = np.exp((proxy - proxy.max()) / beta)
    pi = weights / weights.sum()
    return float(np.sum(pi * np.log(pi * len(r)))), float(pi @ r)


# -- the KL-regularized optimum ---------------------------------------------------------------------------


def test_kl_regularized_matches_a_plain_softmax(rewards):
    betas = [0.05, 0.3, 1.0, 7.0]
    proxy = theory.corrupt(rewards[:3], "top", "noise", seed=1)
    curves = theory.kl_regularized(rewards[:3], proxy, betas)
    for s in range(3):
        for b, beta in enumerate(betas):
            kl, reward = gibbs_reference(rewards[s], proxy[s], beta)
            assert curves.kl[s, b] == pytest.approx(kl, abs=1e-9)
            assert curves.reward[s, b] == pytest.approx(reward, abs=1e-9)


def test_a_correct_proxy_is_the_optimum_and_beats_every_corruption_at_equal_kl(rewards):
    betas = np.geomspace(0.01, 100, 9)
    optimum = theory.kl_regularized(rewards, rewards, betas)
    for proxy in (theory.corrupt(rewards, "top", width=0.0), theory.corrupt(rewards, "top", "noise", noise_scale=0.0)):
        same = theory.kl_regularized(rewards, proxy, betas)
        for field in ("kl", "reward", "win_rate"):
            np.testing.assert_array_equal(getattr(same, field), getattr(optimum, field))
    # π_β under the true reward maximizes E[r] - β·KL, so at equal KL no proxy does better, seed by seed.
    kls = [0.1, 1.0, 3.0, HIGH_KL]
    best = theory.kl_regularized_at(rewards, rewards, kls).reward
    for kind, placement, proxy in proxies(rewards):
        assert (theory.kl_regularized_at(rewards, proxy, kls).reward <= best + 1e-9).all(), (kind, placement)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_band_corruption_costs_the_most_at_high_kl(seed):
    rewards = theory.sample_rewards(30, 2000, seed=seed)  # default width, noise scale and distribution
    for kind in theory.CORRUPTIONS:
        by_placement = {p: proxy for k, p, proxy in proxies(rewards) if k == kind}
        for name, score in (
            ("kl_regularized", lambda proxy: theory.kl_regularized_at(rewards, proxy, HIGH_KL).reward.mean()),
            ("best_of_1024", lambda proxy: theory.best_of_n(rewards, proxy, [1024]).reward.mean()),
        ):
            reward = {p: score(proxy) for p, proxy in by_placement.items()}
            others = min(reward[p] for p in ("bottom", "middle", "everywhere"))
            margin = 0.5 if kind == "shuffle" else 0.03
            assert reward["top"] < others - margin, (kind, name, reward)


def test_below_the_top_band_errors_cost_nothing_at_high_kl_but_do_at_low_kl(rewards):
    base = rewards.mean(axis=1)
    optimum = theory.kl_regularized_at(rewards, rewards, [0.01, HIGH_KL]).reward
    shuffled = theory.kl_regularized_at(rewards, theory.corrupt(rewards, "bottom"), [0.01, HIGH_KL]).reward
    kept = ((shuffled - base[:, None]) / (optimum - base[:, None])).mean(axis=0)
    assert kept[0] < 0.97 and kept[1] > 0.999


def test_at_low_kl_every_placement_stays_near_the_base_policy(rewards):
    base = rewards.mean(axis=1)
    for kind, placement, proxy in proxies(rewards):
        curves = theory.kl_regularized(rewards, proxy, [100.0])
        assert (curves.kl < 1e-3).all(), (kind, placement)
        assert np.abs(curves.reward[:, 0] - base).max() < 0.02, (kind, placement)
        assert np.abs(curves.win_rate - 0.5).max() < 0.01, (kind, placement)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(-3, 3), min_size=2, max_size=40).filter(lambda v: len(set(v)) > 1),
    st.floats(0.01, 50),
    st.floats(1.01, 4),
)
def test_true_reward_under_a_correct_proxy_rises_with_kl(values, beta, ratio):
    r = np.array(values, dtype=float)  # small integer rewards: ties, like rubric scores
    curves = theory.kl_regularized(r, r, [beta * ratio, beta])  # smaller β: more KL
    assert curves.kl[0, 1] >= curves.kl[0, 0] - 1e-12
    assert curves.reward[0, 1] >= curves.reward[0, 0] - 1e-12
    assert curves.win_rate[0, 1] >= curves.win_rate[0, 0] - 1e-12


def test_beta_for_kl_hits_the_target(rewards):
    targets = [1e-3, 0.5, 2.0, HIGH_KL, 7.0]
    betas = theory.beta_for_kl(rewards, targets)
    assert betas.shape == (len(rewards), len(targets)) and (np.diff(betas, axis=1) < 0).all()
    np.testing.assert_allclose(theory.kl_regularized(rewards, rewards, betas).kl, np.tile(targets, (len(rewards), 1)),
                               atol=1e-8)


# -- best-of-n --------------------------------------------------------------------------------------------


def test_best_of_n_kl_formula():
    np.testing.assert_allclose(theory.best_of_n_kl([1, 2, 4]), [0.0, math.log(2) - 0.5, math.log(4) - 0.75])
    # exact over a large continuous set, an upper bound over a small or tied one
    large = theory.sample_rewards(1, 20000, seed=0)
    ns = [2, 8, 64]
    np.testing.assert_allclose(theory.best_of_n_exact_kl(large, ns)[0], theory.best_of_n_kl(ns), atol=5e-3)
    tied = np.array([[0, 0, 1, 1, 1, 2, 5, 5.0]])
    assert (theory.best_of_n_exact_kl(tied, [1, 2, 3, 16]) <= theory.best_of_n_kl([1, 2, 3, 16]) + 1e-12).all()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.lists(st.integers(1, 300), min_size=1, max_size=5))
def test_best_of_n_probabilities_sum_to_one(values, ns):
    proxy = np.array(values + [9], dtype=float)
    probs = theory.best_of_n_probabilities(proxy, ns)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-12)
    if ns[0] == 1:
        np.testing.assert_allclose(probs[0, 0], 1 / proxy.size)


def test_best_of_n_matches_monte_carlo():
    rng = np.random.default_rng(0)
    proxy = np.array([0.3, -1.0, 2.0, 0.3, 1.5, -0.2])  # with a tie
    r = np.array([1.0, 0.0, 0.5, -1.0, 2.0, 0.2])
    draws = 200_000
    for n in (1, 3, 8):
        picks = rng.integers(0, proxy.size, size=(draws, n))
        scores = proxy[picks] + 1e-9 * rng.random((draws, n))  # random tie-breaking
        winners = picks[np.arange(draws), scores.argmax(axis=1)]
        frequencies = np.bincount(winners, minlength=proxy.size) / draws
        np.testing.assert_allclose(theory.best_of_n_probabilities(proxy, [n])[0, 0], frequencies, atol=4e-3)
        assert theory.best_of_n(r, proxy, [n]).reward[0, 0] == pytest.approx(r[winners].mean(), abs=0.01)


# -- how much of the top must be right --------------------------------------------------------------------


def test_top_ranked_proxy_orders_the_top_and_keeps_the_rest_below(rewards):
    r = rewards[:4]
    proxy = theory.top_ranked_proxy(r, 0.2, seed=1)
    top = np.argsort(r, axis=1)[:, -400:]
    np.testing.assert_array_equal(np.take_along_axis(proxy, top, 1), np.take_along_axis(r, top, 1))
    rest = np.argsort(r, axis=1)[:, :-400]
    assert (np.take_along_axis(proxy, rest, 1).max(axis=1) < np.take_along_axis(proxy, top, 1).min(axis=1)).all()
    assert not np.array_equal(np.take_along_axis(proxy, rest, 1), np.take_along_axis(r, rest, 1))
    np.testing.assert_array_equal(theory.top_ranked_proxy(r, 1.0), r)


def test_top_fraction_curve_reaches_the_optimum_and_is_monotone(rewards):
    fractions = np.arange(1, 21) / 20
    kls = [0.5, 2.0, HIGH_KL]
    sweep = theory.top_fraction_sweep(rewards, fractions, kls, seed=2)
    assert sweep.reward.shape == (len(rewards), len(fractions), len(kls))
    np.testing.assert_allclose(sweep.reward[:, -1], theory.kl_regularized_at(rewards, rewards, kls).reward, atol=1e-9)
    np.testing.assert_allclose(sweep.kl, np.broadcast_to(kls, sweep.kl.shape), atol=1e-8)
    mean = sweep.reward.mean(axis=0)  # (fractions, kls)
    assert (np.diff(mean, axis=0) >= -1e-3).all()
    best = theory.smallest_sufficient_fraction(fractions, mean.T, rewards.mean(), mean[-1])
    assert best[0] > best[1] > best[2]  # the harder the optimization, the less of the top must be right
    assert best[2] <= 0.1


def test_smallest_sufficient_fraction():
    fractions = [0.25, 0.5, 0.75, 1.0]
    reward = np.array([[0.5, 0.9, 0.995, 1.0], [0.999, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(theory.smallest_sufficient_fraction(fractions, reward, 0.0, 1.0), [0.75, 0.25])
    assert theory.smallest_sufficient_fraction(fractions, reward[0], 0.0, 1.0, tolerance=0.2) == 0.5
    with pytest.raises(ValueError, match="increasing"):
        theory.smallest_sufficient_fraction([0.5, 0.25], reward[0, :2], 0.0, 1.0)


# -- corruption, win rates, intervals ---------------------------------------------------------------------


def test_every_placement_corrupts_the_same_amount(rewards):
    r = rewards[:5]
    changed = {}
    for kind, placement, proxy in proxies(r):
        changed[kind, placement] = (proxy != r).sum(axis=1)
        if kind == "shuffle":  # a permutation of the true values
            np.testing.assert_array_equal(np.sort(proxy, axis=1), np.sort(r, axis=1))
        else:  # the same noise values, only on different responses
            noise = np.sort(proxy - r, axis=1)
            reference = np.sort(theory.corrupt(r, "top", "noise", seed=5) - r, axis=1)
            np.testing.assert_allclose(noise, reference, atol=1e-12)
    assert all((c <= 600).all() for c in changed.values())
    assert all((changed["noise", p] == 600).all() for p in theory.PLACEMENTS)
    assert all((changed["shuffle", p] >= 590).all() for p in theory.PLACEMENTS)  # a few slots keep their value
    band = (0.2, 0.5)
    assert (theory.corrupt(r, band, "noise") != r).sum(axis=1).tolist() == [600] * 5


def test_win_probabilities_average_one_half_with_ties():
    r = np.array([[1, 1, 2, 3, 3, 3, 0.0], [5, 4, 3, 2, 1, 0, -1.0]])
    wins = theory.win_probabilities(r)
    np.testing.assert_allclose(wins.mean(axis=1), 0.5)
    np.testing.assert_allclose(wins[0], [2 / 7, 2 / 7, 3.5 / 7, 5.5 / 7, 5.5 / 7, 5.5 / 7, 0.5 / 7])


def test_seed_interval_agrees_with_bootstrap_mean():
    values = np.random.default_rng(0).normal(size=(50, 3))
    est = theory.seed_interval(values, seed=4)
    for j in range(3):
        ref = bootstrap_mean(values[:, j], seed=4)
        assert (est.mean[j], est.low[j], est.high[j]) == pytest.approx((ref.mean, ref.low, ref.high), abs=1e-12)


def test_deterministic_under_a_seed():
    a, b, c = (theory.sample_rewards(3, 500, "lognormal", seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for kind in theory.CORRUPTIONS:
        np.testing.assert_array_equal(theory.corrupt(a, "everywhere", kind, seed=1),
                                      theory.corrupt(b, "everywhere", kind, seed=1))
        assert not np.array_equal(theory.corrupt(a, "everywhere", kind, seed=1),
                                  theory.corrupt(a, "everywhere", kind, seed=2))


@pytest.mark.parametrize("distribution", theory.DISTRIBUTIONS)
def test_distributions_are_standardized(distribution):
    r = theory.sample_rewards(50, 4000, distribution, seed=0)
    assert abs(r.mean()) < 0.02 and abs(r.std() - 1) < 0.03


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: theory.corrupt(r, "upper"), "unknown placement 'upper'"),
        (lambda r: theory.corrupt(r, (0.8, 1.2)), r"0 <= low <= high <= 1"),
        (lambda r: theory.corrupt(r, (-0.1, 0.2)), r"0 <= low <= high <= 1"),
        (lambda r: theory.corrupt(r, (0.6, 0.4)), r"0 <= low <= high <= 1"),
        (lambda r: theory.corrupt(r, "top", width=1.5), r"width must lie in \[0, 1\]"),
        (lambda r: theory.corrupt(r, "top", "flip"), "unknown corruption 'flip'"),
        (lambda r: theory.corrupt(r, "top", "noise", noise_scale=-1), "noise_scale must be >= 0"),
        (lambda r: theory.kl_regularized(r, r, [1.0, 0.0]), "beta must be finite and > 0"),
        (lambda r: theory.kl_regularized(r, r, [-2.0]), "beta must be finite and > 0"),
        (lambda r: theory.kl_regularized(r, r[:, :-1], [1.0]), "same shape"),
        (lambda r: theory.beta_for_kl(r, 0.0), "target KL must lie in"),
        (lambda r: theory.beta_for_kl(r, math.log(r.shape[1])), "target KL must lie in"),
        (lambda r: theory.best_of_n(r, r, [0]), "integers n >= 1"),
        (lambda r: theory.best_of_n(r, r, [2.5]), "integers n >= 1"),
        (lambda r: theory.top_ranked_proxy(r, 0.0), r"fraction must lie in \(0, 1\]"),
        (lambda r: theory.sample_rewards(2, 10, "cauchy"), "unknown distribution 'cauchy'"),
        (lambda r: theory.win_probabilities(np.array([1.0, np.nan])), "finite"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call(theory.sample_rewards(2, 50))


def test_script_writes_figures_and_results(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "simulate_tail.py"), "--out", str(tmp_path), "--seeds", "8",
               "--n-responses", "300", "--n-betas", "8", "--max-n", "64", "--x-step", "0.25"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert "smallest X" in completed.stdout
    for name in ("reward_vs_kl.png", "win_rate_vs_kl.png", "top_fraction.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["table"]) == {"shuffle", "noise"}
    assert set(results["table"]["shuffle"]) == {"correct", *theory.PLACEMENTS}
    assert results["top_fraction"]["smallest_sufficient"][-1] <= 1.0
