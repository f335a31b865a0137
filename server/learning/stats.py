"""The little statistics the learning loop needs, with no numeric library: percentiles and
a two-proportion z-test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MIN_RATED = 30  # ratings per variant before a difference is worth a verdict
ALPHA = 0.05


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile by linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 1)


def two_proportion_test(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, *, min_trials: int = MIN_RATED
) -> dict[str, Any]:
    """Is B's success rate different from A's? A two-sided z-test on the pooled rate."""
    enough = min(trials_a, trials_b) >= min_trials
    if not trials_a or not trials_b:
        return {"z": None, "p_value": None, "difference": None, "enough_data": False}
    rate_a, rate_b = successes_a / trials_a, successes_b / trials_b
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    z = (rate_b - rate_a) / spread if spread else 0.0
    return {
        "z": round(z, 4),
        "p_value": round(math.erfc(abs(z) / math.sqrt(2)), 6),
        "difference": round(rate_b - rate_a, 4),
        "rate_control": round(rate_a, 4),
        "rate_variant": round(rate_b, 4),
        "enough_data": enough,
    }


def verdict(control: str, variant: str, test: dict[str, Any], alpha: float = ALPHA) -> str:
    if not test["enough_data"]:
        return (
            f"Not enough ratings yet to compare {variant} with {control}: each needs at "
            f"least {MIN_RATED} rated answers."
        )
    p, a, b = test["p_value"], test["rate_control"], test["rate_variant"]
    if p >= alpha:
        return (
            f"No clear difference between {variant} ({b:.0%} thumbs-up) and {control} "
            f"({a:.0%}); p = {p:.2f}. Keep it running for more ratings, or stop it."
        )
    better, worse = (variant, control) if b > a else (control, variant)
    high, low = max(a, b), min(a, b)
    return (
        f"{better} does better than {worse}: {high:.0%} thumbs-up against {low:.0%} "
        f"(p = {p:.3f}). Promote {better} if the expert ratings agree."
    )
