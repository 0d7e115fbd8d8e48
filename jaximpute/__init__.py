"""jaximpute: multilevel multiple imputation with Gibbs samplers compiled by JAX.

Reads Blimp-style imputation scripts, draws imputations from a Bayesian multilevel model
(factored regression specification; Enders, Du & Keller 2020; Keller & Enders, Blimp), writes
Blimp's stacked and separate files, and reports convergence (split R-hat).
"""

__version__ = "0.1.0"

from .errors import JaxImputeError  # noqa: E402

__all__ = ["impute", "run_script", "JaxImputeError", "__version__"]


def __getattr__(name):
    # imported lazily so that `import jaximpute` (and the CLI's --help) does not start JAX
    if name in ("impute", "run_script", "ImputationResult"):
        from . import api
        return getattr(api, name)
    raise AttributeError(name)
