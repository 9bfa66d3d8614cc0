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
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Estimate(mean, float(low), float(high))


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when either side is constant (no ranking to compare)."""
    from scipy.stats import spearmanr

    if len(x) != len(y):
        raise ValueError(f"rank_correlation needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)
