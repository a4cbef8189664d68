"""Rates with their 95 % Wilson score interval, and how people read them.

    wilson(38, 1200)                    # (0.0228..., 0.0437...)
    rate_text(38, 1200)                 # '3.2 %, 95 % CI 2.3-4.3 %, n = 1,200'

The Wilson interval (Wilson 1927) keeps its coverage near 95 % for small n and for rates near 0 or 1, where
the normal approximation (p ± 1.96 √(p(1-p)/n)) gives intervals below zero or of width zero.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k must be within 0..n, not {k} of {n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def pct(x: float) -> str:
    return f"{x * 100:.1f}"


def rate_text(k: int, n: int) -> str:
    """'3.2 %, 95 % CI 2.3-4.3 %, n = 1,200' ('n = 0' when nothing was conclusive)."""
    if n <= 0:
        return "—, n = 0"
    lo, hi = wilson(k, n)
    return f"{pct(k / n)} %, 95 % CI {pct(lo)}-{pct(hi)} %, n = {n:,}"
