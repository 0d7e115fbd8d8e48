"""jaximpute: multilevel multiple imputation with Gibbs samplers compiled by JAX.

Reads Blimp-style imputation scripts, draws imputations from a Bayesian multilevel model
(factored regression specification; Enders, Du & Keller 2020; Keller & Enders, Blimp), writes
Blimp's stacked and separate files, and reports convergence (split R-hat).
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("jaximpute")      # one version number: pyproject.toml's
except PackageNotFoundError:                # a plain checkout on PYTHONPATH, not installed
    __version__ = "0+checkout"


def _checkout_kernels() -> None:
    """Make `jaximpute.kernels` importable from a plain checkout (PYTHONPATH=<repository>).

    The kernels live in the repository's top-level kernels/ folder; the installed package maps
    them to jaximpute.kernels (pyproject.toml's package-dir), and a plain checkout has no such
    mapping, so this does the same: the folder beside this package is loaded under that name."""
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    init = here.parent / "kernels" / "__init__.py"
    if "jaximpute.kernels" in sys.modules or (here / "kernels").is_dir() or not init.is_file():
        return                                  # imported, a wheel's layout, or no checkout
    spec = importlib.util.spec_from_file_location("jaximpute.kernels", init,
                                                  submodule_search_locations=[str(init.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["jaximpute.kernels"] = module
    spec.loader.exec_module(module)


_checkout_kernels()

from .errors import JaxImputeError  # noqa: E402

__all__ = ["impute", "run_script", "JaxImputeError", "__version__"]


def __getattr__(name):
    # imported lazily so that `import jaximpute` (and the CLI's --help) does not start JAX
    if name in ("impute", "run_script", "ImputationResult"):
        from . import api
        return getattr(api, name)
    raise AttributeError(name)
