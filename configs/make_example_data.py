"""Make the bundled example data sets (deterministic; rerun to reproduce the committed files).

random_intercept.csv: the seed's random-intercept example, columns `cluster y x` (no header, -99
for missing), 100 clusters of 10 rows. Population model (ICC of x 0.30, of y about 0.35):

    x_ij = 50 + a_j + w_ij,        a_j ~ N(0, 3^2),   w_ij ~ N(0, 4.5^2)
    y_ij = 20 + 0.5 (x_ij - 50) + 0.6 a_j + c_j + e_ij,   c_j ~ N(0, 2^2),  e_ij ~ N(0, 4^2)

so the within-cluster slope is 0.5 and the between-cluster slope 1.1. x is missing completely at
random (15%); y is missing at random given x (logistic, about 25%, more often for large x).

Usage: python configs/make_example_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def random_intercept_example(seed: int = 20261124, clusters: int = 100, size: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(1, clusters + 1), size)
    a = rng.normal(0, 3.0, clusters)[cl - 1]
    c = rng.normal(0, 2.0, clusters)[cl - 1]
    x = 50 + a + rng.normal(0, 4.5, cl.size)
    y = 20 + 0.5 * (x - 50) + 0.6 * a + c + rng.normal(0, 4.0, cl.size)
    y_miss = rng.random(cl.size) < 1 / (1 + np.exp(-(-1.1 + 0.25 * (x - 50))))
    x_miss = rng.random(cl.size) < 0.15
    y = np.round(y, 3)
    x = np.round(x, 3)
    y[y_miss] = -99
    x[x_miss & ~y_miss] = -99          # keep at least one of the two observed on every row
    return np.column_stack([cl, y, x])


def write(path: Path, table: np.ndarray) -> None:
    with open(path, "w") as f:
        for row in table:
            f.write(",".join(f"{int(v)}" if float(v).is_integer() else f"{v:.3f}" for v in row) + "\n")


if __name__ == "__main__":
    write(HERE / "random_intercept.csv", random_intercept_example())
    print("wrote", HERE / "random_intercept.csv")
