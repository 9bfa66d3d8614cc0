"""Small statistics shared by the monitor, evaluation and reports: bootstrap intervals over prompts.

Scores of several samples of one prompt are not independent, so intervals resample *prompts* (the unit the
held-out set was drawn in), not samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean with a bootstrap confidence interval."""

    mean: float
    low: float
    high: float

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {prefix: self.mean, f"{prefix}_ci_low": self.low, f"{prefix}_ci_high": self.high}


def bootstrap_mean(
    per_prompt: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of per-prompt values with a percentile bootstrap interval (prompts resampled with replacement).

    Deterministic under `seed`; a single prompt gives a zero-width interval.
    """
    values = np.asarray(per_prompt, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    mean = float(values.mean())
    if values.size == 1:
        return Estimate(mean, mean, mean)
    tail = (1 - confidence) / 2
    low, high = np.quantile(resampled_means(values, resamples, seed), [tail, 1 - tail])
    return Estimate(mean, float(low), float(high))


def resampled_means(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Means over the seed axis (axis 0) of `resamples` bootstrap resamples of seeds, shape (resamples, ...).

    The resampled indices become a (resamples x seeds) count matrix, so any number of statistics (the trailing
    axes) are resampled for the cost of one matrix product: `bootstrap_mean` and the tail simulation's intervals
    over seeds both draw from here.
    """
    v = np.asarray(values, dtype=float)
    seeds = v.shape[0]
    idx = np.random.default_rng(seed).integers(0, seeds, size=(resamples, seeds))
    counts = np.bincount((idx + seeds * np.arange(resamples)[:, None]).ravel(), minlength=resamples * seeds)
    means = counts.reshape(resamples, seeds) @ v.reshape(seeds, -1) / seeds
    return means.reshape((resamples, *v.shape[1:]))


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when either side is constant (no ranking to compare)."""
    from scipy.stats import spearmanr

    if len(x) != len(y):
        raise ValueError(f"rank_correlation needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)
