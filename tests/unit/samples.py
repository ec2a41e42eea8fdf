"""Made-up perf samples with the shape measured on this project's machines."""

from __future__ import annotations

import math

import numpy as np


def boots(n: int, cv: float, scale: float = 1.0, seed: int = 1) -> list[float]:
    """n boots of a throughput near 1e6 * scale with lognormal noise of this CV."""
    sigma = math.sqrt(math.log1p(cv * cv))
    rng = np.random.default_rng(seed)
    return [float(x) for x in 1e6 * scale * np.exp(rng.normal(0.0, sigma, n))]
