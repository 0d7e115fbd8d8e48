"""Make configs/probsolve.csv: example data with the structure of the seed's analysis example.

The seed (shared/reference) analyses a math problem-solving intervention: repeated measures
(7 waves) of students, students in schools, a random slope for months and a condition-by-months
interaction. Its data are not public, so this script draws data of the same shape and roughly the
same parameter values (the seed's Mplus output: months slope about 0.68 + 0.63 condition, slope
variance about 0.35, residual variance about 62, efficacy slope about 0.72, stanmath slope about
0.05):

    928 students in 29 schools, 7 waves each: 6,496 rows, the seed benchmark's shape.

Columns (the seed's VARIABLES order, headerless, -99 = missing):

    school condition esolpercent student abilitygrp female stanmath frlunch wave months
    probsolve efficacy

- school level: condition (0/1, about half the schools), esolpercent (0-60)
- student level: abilitygrp (1-3), female (0/1), stanmath (standardised maths score, about
  N(500, 30^2)), frlunch (0/1, lunch assistance, related to stanmath and esolpercent)
- wave level: wave 1-7, months = wave - 1, efficacy (1-7 codes from a latent normal with a
  student effect; ORDINAL in the seed), probsolve (the outcome)

    probsolve = 40 + 0.05 stanmath - 0.4 condition - 1.5 frlunch + 0.72 efficacy
                + (0.68 + 0.63 condition) months + u0 + u1 months + school + e
    (u0, u1) ~ N(0, [[18, 0.5], [0.5, 0.35]]),  school ~ N(0, 2),  e ~ N(0, 62)

Missing values, MAR given complete variables:
- probsolve: about 25%, more at later waves (attrition) and in lower ability groups
- efficacy (level 1): about 20%, more in the control condition and for girls
- stanmath (level 2): about 10% of students, more where esolpercent is high
- frlunch (level 2): about 6% of students, more among boys

Run: python configs/make_probsolve_data.py   (writes configs/probsolve.csv; seeded, so the file
is the same on every machine with the same numpy)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NAMES = ("school condition esolpercent student abilitygrp female stanmath frlunch wave months "
         "probsolve efficacy").split()


def logistic(z):
    return 1.0 / (1.0 + np.exp(-z))


def make(seed: int = 20261124, schools: int = 29, per_school: int = 32, waves: int = 7):
    rng = np.random.default_rng(seed)
    n_students = schools * per_school
    # school level
    condition_s = rng.permutation(np.arange(schools) % 2)
    esol_s = np.round(rng.uniform(0, 60, schools), 1)
    school_eff = rng.normal(0, np.sqrt(2.0), schools)
    # student level
    school = np.repeat(np.arange(1, schools + 1), per_school)
    student = np.arange(1, n_students + 1)
    si = school - 1
    abilitygrp = rng.integers(1, 4, n_students)
    female = rng.integers(0, 2, n_students)
    stanmath = np.round(500 + 10 * (abilitygrp - 2) + rng.normal(0, 28, n_students) - 0.1 * esol_s[si])
    frlunch = (rng.normal(0, 1, n_students) + 0.02 * (esol_s[si] - 30) - 0.02 * (stanmath - 500)
               > 0.2).astype(int)
    u = rng.multivariate_normal([0, 0], [[18.0, 0.5], [0.5, 0.35]], n_students)
    eff_student = rng.normal(0, 0.8, n_students)
    # wave level
    rows = n_students * waves
    r_student = np.repeat(np.arange(n_students), waves)
    wave = np.tile(np.arange(1, waves + 1), n_students)
    months = wave - 1
    eff_latent = 4.0 + 0.3 * (abilitygrp[r_student] - 2) + eff_student[r_student] + rng.normal(0, 1.1, rows)
    efficacy = np.clip(np.round(eff_latent), 1, 7).astype(int)
    cond = condition_s[si][r_student]
    probsolve = (40 + 0.05 * stanmath[r_student] - 0.4 * cond - 1.5 * frlunch[r_student]
                 + 0.72 * efficacy + (0.68 + 0.63 * cond) * months
                 + u[r_student, 0] + u[r_student, 1] * months + school_eff[si][r_student]
                 + rng.normal(0, np.sqrt(62.0), rows))
    probsolve = np.round(probsolve, 1)

    table = np.column_stack([
        school[r_student], cond, esol_s[si][r_student], student[r_student], abilitygrp[r_student],
        female[r_student], stanmath[r_student], frlunch[r_student], wave, months, probsolve,
        efficacy]).astype(float)
    # MAR missingness on complete variables
    miss_y = rng.random(rows) < logistic(-1.2 + 0.3 * (wave - 4) - 0.35 * (abilitygrp[r_student] - 2))
    miss_eff = rng.random(rows) < logistic(-1.35 - 0.5 * (cond - 0.5) + 0.4 * (female[r_student] - 0.5))
    miss_stan = rng.random(n_students) < logistic(-2.3 + 0.03 * (esol_s[si] - 30))
    miss_frl = rng.random(n_students) < logistic(-2.8 - 0.6 * (female - 0.5))
    table[miss_y, NAMES.index("probsolve")] = np.nan
    table[miss_eff, NAMES.index("efficacy")] = np.nan
    table[miss_stan[r_student], NAMES.index("stanmath")] = np.nan
    table[miss_frl[r_student], NAMES.index("frlunch")] = np.nan
    return table


def write(table: np.ndarray, path: Path) -> None:
    lines = []
    for row in table:
        cells = []
        for name, v in zip(NAMES, row):
            if np.isnan(v):
                cells.append("-99")
            elif name in ("esolpercent", "probsolve"):
                cells.append(f"{v:.1f}")
            else:
                cells.append(str(int(v)))
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    t = make()
    out = HERE / "probsolve.csv"
    write(t, out)
    miss = np.isnan(t).mean(axis=0)
    print(f"wrote {out}: {t.shape[0]} rows, {len(np.unique(t[:, 3]))} students")
    for n, m in zip(NAMES, miss):
        if m:
            print(f"  {n}: {100 * m:.1f}% missing")
