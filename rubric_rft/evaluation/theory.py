"""The paper's theory as a simulation: which reward errors cause over-optimization, measured exactly.

"Chasing the Tail" argues that over-optimization comes from reward errors in the *high-reward tail*: the
harder a policy is optimized against a proxy reward, the more its mass sits on the responses the proxy ranks
highest, so in the end only the proxy's ranking of the top responses matters. This module makes that
checkable on a finite response set, with no sampling noise beyond the draw of the set itself:

- the base policy π₀ is uniform over N responses with true rewards r (`sample_rewards`);
- a proxy r̂ equals r except inside one quantile band of π₀'s reward distribution, where its ranking is
  corrupted (`corrupt`), or except below the top X%, which it orders at random (`top_ranked_proxy`);
- two optimizers use r̂ and are scored on r: the KL-regularized optimum π_β ∝ π₀·exp(r̂/β), what RL with a
  KL penalty converges to (`kl_regularized`, `kl_regularized_at`), and best-of-n under r̂, exact from order
  statistics (`best_of_n`).

Arrays of rewards have shape (seeds, N): one independent response set per row. Every result keeps the seed
axis first, so `seed_interval` can resample seeds for confidence intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from rubric_rft.stats import resampled_means

PLACEMENTS = ("bottom", "middle", "top", "everywhere")
CORRUPTIONS = ("shuffle", "noise")
DISTRIBUTIONS = ("normal", "uniform", "lognormal", "neg-lognormal")
DEFAULT_WIDTH = 0.3
DEFAULT_NOISE_SCALE = 0.5  # x std(r): mostly reorders within a 30% band; at 2 a bottom band's noise reaches the top
LOGNORMAL_SIGMA = 0.75
_CHUNK_ELEMENTS = 1 << 22  # bound on (seeds x points x N) per vectorized step, ~32 MB of float64

Band = str | tuple[float, float]


@dataclass(frozen=True)
class Curves:
    """Per-seed results of an optimizer along a sweep; every array has the seed axis first.

    `kl` is KL(π‖π₀) in nats, `reward` the true expected reward E_π[r], `win_rate` the probability that a
    response of π beats one of π₀ on true reward, ties counting one half (π₀ itself scores exactly 0.5).
    """

    kl: np.ndarray
    reward: np.ndarray
    win_rate: np.ndarray


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with a percentile-bootstrap interval (seeds resampled), elementwise over the rest."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def sample_rewards(n_seeds: int, n_responses: int, distribution: str = "normal", seed: int = 0) -> np.ndarray:
    """True rewards of shape (n_seeds, n_responses), i.i.d. with mean 0 and variance 1.

    `lognormal` (σ = 0.75, standardized) has a long high-reward tail, `neg-lognormal` its mirror image a long
    low-reward tail; `uniform` has no tail at all.
    """
    if n_seeds < 1 or n_responses < 2:
        raise ValueError(f"need n_seeds >= 1 and n_responses >= 2, got {n_seeds} and {n_responses}")
    rng = np.random.default_rng(seed)
    shape = (n_seeds, n_responses)
    if distribution == "normal":
        return rng.standard_normal(shape)
    if distribution == "uniform":
        return rng.uniform(-math.sqrt(3), math.sqrt(3), shape)
    if distribution in ("lognormal", "neg-lognormal"):
        s2 = LOGNORMAL_SIGMA**2
        values = (np.exp(LOGNORMAL_SIGMA * rng.standard_normal(shape)) - math.exp(s2 / 2)) / math.sqrt(
            (math.exp(s2) - 1) * math.exp(s2)
        )
        return values if distribution == "lognormal" else -values
    raise ValueError(f"unknown distribution {distribution!r}; choose from {', '.join(DISTRIBUTIONS)}")


def band_slots(placement: Band, width: float, n: int) -> tuple[int | None, int]:
    """(first rank slot, size) of a band among N responses sorted by true reward; first is None for `everywhere`.

    Named bands all hold round(width·N) responses: `bottom` the lowest, `top` the highest, `middle` the ones
    around the median, `everywhere` as many chosen at random. A (low, high) pair is a band of quantiles of π₀'s
    reward distribution, 0 <= low <= high <= 1; `width` is then unused.
    """
    if isinstance(placement, str):
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; choose from {', '.join(PLACEMENTS)} or (low, high)")
        if not 0 <= width <= 1:
            raise ValueError(f"band width must lie in [0, 1], got {width}")
        size = round(width * n)
        first = {"bottom": 0, "middle": (n - size) // 2, "top": n - size, "everywhere": None}[placement]
        return first, size
    low, high = (float(q) for q in placement)
    if not 0 <= low <= high <= 1:
        raise ValueError(f"band (low, high) must satisfy 0 <= low <= high <= 1, got ({low}, {high})")
    return round(low * n), round(high * n) - round(low * n)


def corrupt(
    rewards: np.ndarray,
    placement: Band = "top",
    kind: str = "shuffle",
    *,
    width: float = DEFAULT_WIDTH,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    seed: int = 0,
) -> np.ndarray:
    """A proxy reward: `rewards` with its ranking corrupted inside one band (see `band_slots`).

    `shuffle` permutes the true values among the band's responses (the proxy keeps r's values, so π_β has the
    same KL at a given β as under r); `noise` adds Gaussian noise of standard deviation noise_scale·std(r).

    The corruption is equal across placements: every band holds the same number of responses, and for one
    seed all placements use the same random draws (the same permutation of band slots, the same noise
    values), only applied to different responses. `everywhere` spends that same budget on a uniformly random
    set of responses, so it corrupts each quantile of the distribution in proportion to its size.

    What equal count and equal draws leave unequal: a shuffle moves values by as much as its band's values are
    spread (more in a normal's tails than its middle, most for `everywhere`, whose swaps span the whole range),
    and noise large enough to lift responses out of their band turns an error elsewhere into one at the top.
    """
    r = _as_rewards(rewards)
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}")
    if not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
    seeds, n = r.shape
    first, size = band_slots(placement, width, n)
    rng = np.random.default_rng(seed)
    # Draw everything every time so the streams, hence the corruption, do not depend on placement or kind.
    keys, noise, picks = rng.random((seeds, n)), rng.standard_normal((seeds, n)), rng.random((seeds, n))
    proxy = r.copy()
    if size == 0:
        return proxy
    order = np.argsort(r, axis=1, kind="stable")  # response indices from the lowest true reward up
    if first is None:
        slots = np.sort(np.argsort(picks, axis=1)[:, :size], axis=1)
        members = np.take_along_axis(order, slots, axis=1)
    else:
        members = order[:, first : first + size]
    if kind == "shuffle":
        # Keys of the first `size` slots: the permutation is shared by all placements and nested across sizes.
        donors = np.take_along_axis(members, np.argsort(keys[:, :size], axis=1), axis=1)
        values = np.take_along_axis(r, donors, axis=1)
    else:
        values = np.take_along_axis(r, members, axis=1) + noise_scale * r.std(axis=1, keepdims=True) * noise[:, :size]
    np.put_along_axis(proxy, members, values, axis=1)
    return proxy


def top_ranked_proxy(rewards: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A proxy that ranks the top `fraction` of responses correctly and the rest at random, all below the top.

    It shuffles the true values below the top `fraction`; for one seed the random order is nested across
    fractions (the same keys), so curves over `fraction` compare like with like.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    return corrupt(rewards, (0.0, 1.0 - fraction), "shuffle", seed=seed)


def win_probabilities(rewards: np.ndarray) -> np.ndarray:
    """Per response, P(r(y) > r(y')) + ½·P(r(y) = r(y')) for y' ~ π₀; their mean under π₀ is exactly ½."""
    r = _as_rewards(rewards)
    less, less_equal = _rank_bounds(r)
    return (less + less_equal) / (2 * r.shape[1])


def kl_regularized(rewards: np.ndarray, proxy: np.ndarray, betas: Sequence[float] | np.ndarray) -> Curves:
    """KL, true reward and win rate of π_β ∝ π₀·exp(proxy/β) for each β; arrays (seeds, len(betas)).

    `betas` is one sweep for all seeds, shape (B,), or one per seed, shape (seeds, B). Small β is strong
    optimization (high KL); large β stays near π₀.
    """
    r, p = _as_pair(rewards, proxy)
    b = np.asarray(betas, dtype=float)
    if b.ndim == 1:
        b = np.broadcast_to(b, (r.shape[0], b.size))
    if b.ndim != 2 or b.shape[0] != r.shape[0] or b.shape[1] == 0:
        raise ValueError(f"betas must have shape (B,) or (seeds, B) with seeds = {r.shape[0]}, got {b.shape}")
    if not (np.isfinite(b).all() and (b > 0).all()):
        raise ValueError("every beta must be finite and > 0 (beta is the KL coefficient; beta -> 0 is argmax)")
    kl, _, reward, win = _gibbs_stats(p, b, r, win_probabilities(r))
    return Curves(kl=kl, reward=reward, win_rate=win)


def beta_for_kl(proxy: np.ndarray, target_kl: float | Sequence[float], *, tol: float = 1e-9) -> np.ndarray:
    """Per seed, the β at which π_β ∝ π₀·exp(proxy/β) has KL(π_β‖π₀) = target; shape (seeds, targets).

    Solved by Newton's method in log β, safeguarded by bisection (KL falls as β grows, d KL/d log β =
    -Var_π(proxy)/β²). A target must lie in (0, log N - log m), m the number of responses tied at the top.
    """
    p = _as_rewards(proxy)
    targets = np.atleast_1d(np.asarray(target_kl, dtype=float))
    seeds, n = p.shape
    ceiling = np.log(n) - np.log((p == p.max(axis=1, keepdims=True)).sum(axis=1))
    if targets.ndim != 1 or not (targets > 0).all() or (targets[None, :] >= ceiling[:, None]).any():
        raise ValueError(
            f"target KL must lie in (0, {ceiling.min():.4g}) nats (log N minus log of ties at the top), got {targets}"
        )
    scale = np.log(p.std(axis=1))[:, None]
    t = np.broadcast_to(scale, (seeds, targets.size)).copy()
    low, high = t - 25.0, t + 25.0
    for _ in range(200):
        kl, var, *_ = _gibbs_stats(p, np.exp(t))
        gap = kl - targets
        if (np.abs(gap) < tol).all():
            return np.exp(t)
        low, high = np.where(gap > 0, t, low), np.where(gap < 0, t, high)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = t + gap * np.exp(2 * t) / var
        t = np.where(np.isfinite(newton) & (newton > low) & (newton < high), newton, (low + high) / 2)
    raise RuntimeError(f"beta_for_kl did not converge (largest KL error {np.abs(gap).max():.3g})")


def kl_regularized_at(rewards: np.ndarray, proxy: np.ndarray, target_kl: float | Sequence[float]) -> Curves:
    """`kl_regularized` at the β that gives each seed exactly the target KL(s); arrays (seeds, targets)."""
    return kl_regularized(rewards, proxy, beta_for_kl(proxy, target_kl))


def best_of_n_kl(n: int | Sequence[int] | np.ndarray) -> np.ndarray:
    """The analytic KL(best-of-n‖π₀) = log n - (n-1)/n: exact for continuous rewards, an upper bound otherwise."""
    ns = _as_ns(n)
    return np.log(ns) - (ns - 1) / ns


def best_of_n_probabilities(proxy: np.ndarray, ns: int | Sequence[int] | np.ndarray) -> np.ndarray:
    """P(response i is the best of n draws from π₀ under the proxy), shape (seeds, len(ns), N); rows sum to 1.

    With ranks 1..N by the proxy, response i wins with probability (rank_i^n - (rank_i - 1)^n)/N^n; a group
    of tied responses shares its group's probability equally (ties broken at random).
    """
    p = _as_rewards(proxy)
    counts = _as_ns(ns)
    n = p.shape[1]
    less, less_equal = _rank_bounds(p)
    upper = (less_equal / n)[:, None, :] ** counts[None, :, None]
    lower = (less / n)[:, None, :] ** counts[None, :, None]
    return (upper - lower) / (less_equal - less)[:, None, :]


def best_of_n(rewards: np.ndarray, proxy: np.ndarray, ns: int | Sequence[int] | np.ndarray) -> Curves:
    """Best-of-n under the proxy, exact over the finite set; arrays (seeds, len(ns)), `kl` the analytic KL."""
    r, p = _as_pair(rewards, proxy)
    counts = _as_ns(ns)
    wins = win_probabilities(r)
    reward, win = np.empty((r.shape[0], counts.size)), np.empty((r.shape[0], counts.size))
    for rows in _seed_slices(r.shape, counts.size):
        probs = best_of_n_probabilities(p[rows], counts)
        reward[rows] = np.einsum("smn,sn->sm", probs, r[rows])
        win[rows] = np.einsum("smn,sn->sm", probs, wins[rows])
    kl = np.broadcast_to(best_of_n_kl(counts), reward.shape).copy()
    return Curves(kl=kl, reward=reward, win_rate=win)


def best_of_n_exact_kl(proxy: np.ndarray, ns: int | Sequence[int] | np.ndarray) -> np.ndarray:
    """KL(best-of-n‖π₀) computed over the finite set, shape (seeds, len(ns)); at most `best_of_n_kl`."""
    probs = best_of_n_probabilities(proxy, ns)
    n = probs.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(probs * n), 0.0)
    return terms.sum(axis=-1)


def top_fraction_sweep(
    rewards: np.ndarray, fractions: Sequence[float] | np.ndarray, target_kl: float | Sequence[float], seed: int = 0
) -> Curves:
    """π_β at each target KL when the proxy ranks only the top `fraction` correctly; arrays (seeds, F, targets).

    One β per seed and target serves every fraction: a shuffled proxy holds r's values, so it has r's KL at
    every β. `fractions` = 1 is the true optimum at that KL.
    """
    r = _as_rewards(rewards)
    betas = beta_for_kl(r, target_kl)
    wins = win_probabilities(r)
    results = [_gibbs_stats(top_ranked_proxy(r, float(f), seed), betas, r, wins) for f in fractions]
    kl, _, reward, win = (np.stack([res[i] for res in results], axis=1) for i in range(4))
    return Curves(kl=kl, reward=reward, win_rate=win)


def smallest_sufficient_fraction(
    fractions: Sequence[float] | np.ndarray,
    reward: np.ndarray,
    base: np.ndarray | float,
    optimum: np.ndarray | float,
    tolerance: float = 0.01,
) -> np.ndarray:
    """Smallest fraction whose reward recovers at least (1 - tolerance) of the gain from π₀ to the optimum.

    The criterion is relative: (reward - base) >= (1 - tolerance)·(optimum - base). `reward` has the fraction
    axis last, `base` and `optimum` the leading shape; NaN where no fraction qualifies.
    """
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or np.any(np.diff(f) <= 0):
        raise ValueError("fractions must be a strictly increasing 1-D sequence")
    base, optimum = np.asarray(base, dtype=float)[..., None], np.asarray(optimum, dtype=float)[..., None]
    enough = np.asarray(reward) - base >= (1 - tolerance) * (optimum - base)
    return np.where(enough.any(axis=-1), f[np.argmax(enough, axis=-1)], np.nan)


def seed_interval(values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Interval:
    """Mean over seeds (axis 0) with a percentile-bootstrap confidence interval, elementwise."""
    v = np.asarray(values, dtype=float)
    if v.shape[0] == 1:
        return Interval(v[0], v[0], v[0])
    tail = (1 - confidence) / 2
    low, high = np.quantile(resampled_means(v, resamples, seed), [tail, 1 - tail], axis=0)
    return Interval(v.mean(axis=0), low, high)


def _gibbs_stats(proxy: np.ndarray, betas: np.ndarray, *weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """For π_β ∝ exp(proxy/β), betas (seeds, K): KL, Var_π(proxy), and E_π[w] for each `weights` array.

    Log-sum-exp throughout: weights are exp((proxy - max)/β), and KL = E_π[proxy - max]/β - log Z + log N.
    """
    seeds, n = proxy.shape
    k = betas.shape[1]
    centered = proxy - proxy.max(axis=1, keepdims=True)  # <= 0, exactly 0 at the top: stable as β -> 0
    columns = np.stack([centered, centered**2, *weights], axis=-1)  # (seeds, N, 2 + len(weights))
    kl, var = np.empty((seeds, k)), np.empty((seeds, k))
    means = np.empty((seeds, k, len(weights)))
    for rows in _seed_slices(proxy.shape, k):
        b = betas[rows]
        unnormalized = np.exp(centered[rows, None, :] / b[:, :, None])
        z = unnormalized.sum(axis=-1)
        moments = np.matmul(unnormalized, columns[rows]) / z[..., None]
        kl[rows] = np.maximum(moments[..., 0] / b - np.log(z) + math.log(n), 0.0)
        var[rows] = np.maximum(moments[..., 1] - moments[..., 0] ** 2, 0.0)
        means[rows] = moments[..., 2:]
    return (kl, var, *np.moveaxis(means, -1, 0))


def _seed_slices(shape: tuple[int, int], points: int) -> Iterator[slice]:
    seeds, n = shape
    step = max(1, _CHUNK_ELEMENTS // max(1, points * n))
    for start in range(0, seeds, step):
        yield slice(start, start + step)


def _rank_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per element, how many in its row are < it and how many are <= it (itself included)."""
    seeds, n = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, axis=1)
    pos = np.broadcast_to(np.arange(n), (seeds, n))
    edge = xs[:, 1:] != xs[:, :-1]
    yes = np.ones((seeds, 1), dtype=bool)
    first = np.maximum.accumulate(np.where(np.concatenate([yes, edge], axis=1), pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(np.concatenate([edge, yes], axis=1), pos + 1, n)[:, ::-1], axis=1)[:, ::-1]
    less, less_equal = np.empty((seeds, n), dtype=np.int64), np.empty((seeds, n), dtype=np.int64)
    np.put_along_axis(less, order, first, axis=1)
    np.put_along_axis(less_equal, order, last, axis=1)
    return less, less_equal


def _as_rewards(values: np.ndarray) -> np.ndarray:
    r = np.asarray(values, dtype=float)
    if r.ndim == 1:
        r = r[None, :]
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must have shape (seeds, N) or (N,) with N >= 2, got {np.shape(values)}")
    if not np.isfinite(r).all():
        raise ValueError("rewards must be finite")
    return r


def _as_pair(rewards: np.ndarray, proxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, p = _as_rewards(rewards), _as_rewards(proxy)
    if r.shape != p.shape:
        raise ValueError(f"rewards and proxy must have the same shape, got {r.shape} and {p.shape}")
    return r, p


def _as_ns(n: int | Sequence[int] | np.ndarray) -> np.ndarray:
    ns = np.atleast_1d(np.asarray(n))
    numeric = np.issubdtype(ns.dtype, np.integer) or np.issubdtype(ns.dtype, np.floating)
    if ns.ndim != 1 or ns.size == 0 or not numeric or not (np.isfinite(ns) & (ns >= 1) & (ns == np.round(ns))).all():
        raise ValueError(f"best-of-n needs integers n >= 1, got {n}")
    return ns.astype(float)
