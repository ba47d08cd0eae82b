"""Small statistics shared by the notebooks' verdicts: the mean of per-seed (paired) values and
its Student-t interval."""
from __future__ import annotations

import math
from typing import Sequence


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean, sample std, count and the two-sided Student-t interval of the mean of ``values``
    (e.g. per-seed paired differences); NaN bounds with fewer than two values."""
    from scipy import stats

    v = [float(x) for x in values]
    n = len(v)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "std": nan, "n": 0, "low": nan, "high": nan}
    m = sum(v) / n
    if n < 2:
        return {"mean": m, "std": nan, "n": 1, "low": nan, "high": nan}
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": m, "std": sd, "n": n, "low": m - half, "high": m + half}
