"""A small, independent maximum-likelihood fit of the random-intercept model, for tests.

y_ij = x_ij' beta + u_j + e_ij, u_j ~ N(0, tau), e_ij ~ N(0, s2). With theta = tau / s2 the
cluster covariance is s2 (I + theta 11'), whose inverse is (I - c_j 11') / s2 with
c_j = theta / (1 + n_j theta) (Sherman-Morrison), so the deviance profiled over beta and s2 is

    N log(RSS(theta) / N) + sum_j log(1 + n_j theta)

(Pinheiro & Bates 2000, sec. 2.2; Bates et al. 2015, lme4's profiled deviance). It is minimised
over theta >= 0 by a bounded scalar search. numpy + scipy only: it shares no code with jaximpute.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


def fit_random_intercept(y, x, cluster):
    """Return dict(beta, se, tau, s2, loglik) of the ML fit; x includes the intercept column."""
    y = np.asarray(y, float)
    x = np.asarray(x, float)
    ids, inv = np.unique(cluster, return_inverse=True)
    n_j = np.bincount(inv).astype(float)
    N = y.size

    def parts(theta):
        c = theta / (1.0 + n_j * theta)
        sx = np.zeros((len(ids), x.shape[1]))
        np.add.at(sx, inv, x)
        sy = np.bincount(inv, weights=y)
        xtwx = x.T @ x - (sx * c[:, None]).T @ sx
        xtwy = x.T @ y - (sx * c[:, None]).T @ sy
        beta = np.linalg.solve(xtwx, xtwy)
        r = y - x @ beta
        sr = np.bincount(inv, weights=r)
        rss = r @ r - np.sum(c * sr * sr)
        return beta, rss, xtwx

    def deviance(log_theta):
        theta = np.exp(log_theta)
        _, rss, _ = parts(theta)
        return N * np.log(rss / N) + np.sum(np.log1p(n_j * theta))

    opt = minimize_scalar(deviance, bounds=(-12.0, 6.0), method="bounded",
                          options={"xatol": 1e-10})
    theta = float(np.exp(opt.x))
    beta, rss, xtwx = parts(theta)
    s2 = rss / N
    loglik = -0.5 * (opt.fun + N * (1.0 + np.log(2 * np.pi)))
    return {"beta": beta, "se": np.sqrt(np.diag(s2 * np.linalg.inv(xtwx))),
            "tau": theta * s2, "s2": s2, "loglik": loglik}
