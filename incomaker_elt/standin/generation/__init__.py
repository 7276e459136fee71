"""Generation of the synthetic account, one module per part of the business.

Each generator takes a numpy Generator and returns tables as `dict[str, np.ndarray]`. Timestamps
are int64 epoch seconds and a missing integer or timestamp is `MISSING`; the world loader turns
those into DuckDB TIMESTAMPs and NULLs.
"""

from __future__ import annotations

import numpy as np

Columns = dict[str, np.ndarray]
MISSING = np.iinfo(np.int64).min


def run_positions(counts: np.ndarray) -> np.ndarray:
    """For runs of `counts` elements laid end to end, each element's place (0, 1...) in its run."""
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


def pick(rng: np.random.Generator, choices: list[str] | tuple[str, ...], n: int) -> np.ndarray:
    """n strings drawn uniformly from `choices`, as an object array."""
    return np.asarray(choices, dtype=object)[rng.integers(0, len(choices), n)]
