"""The one percentile the benchmarks print."""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile, `q` in 0..100 (no interpolation: p99 of 100 samples is the 99th smallest).
    NaN for no values, so an empty run prints as such instead of failing."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between a reading and its truth: digits missed, added or misread, as the
    robustness and feedback-loop benchmarks both count them."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


__all__ = ["edit_distance", "percentile"]
