"""A simulation study's config (jaximpute.studies.config): errors that name the file and the
key, the settings that make a study's fingerprint, and the example configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaximpute.cli import main
from jaximpute.studies.config import ConfigError, load_study
from jaximpute.studies.populations import RandomSlope, generate_batch

ROOT = Path(__file__).resolve().parents[1]

# a quick sampler schedule, shared by the configs below
IMPUTATION = """[imputation]
nimps = 2
burn = 40
thin = 10
chains = 2
"""

TINY = """
[study]
reps = 4
batch = 2
seed = 11
methods = ["random intercept", "listwise", "complete"]
""" + IMPUTATION + """[population]
mechanism = "MAR"
[[conditions]]
clusters = 12
cluster_size = 4
[[conditions]]
name = "MCAR"
clusters = 12
cluster_size = 4
mechanism = "MCAR"
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("edit,fragment", [
    (("mechanism = \"MAR\"", "mechanism = \"NMAR\""), "[population].mechanism: 'NMAR'; expected one of MAR"),
    (("methods = [", "methods = [\"fokal\", "), "unknown method 'fokal' (did you mean 'focal'?)"),
    (("[imputation]", "[imputaton]"), "unknown section [imputaton] (did you mean 'imputation'?)"),
    (("clusters = 12\ncluster_size = 4\n[[", "clusterz = 12\ncluster_size = 4\n[["), "#1: unknown key 'clusterz'"),
    (("nimps = 2", "nimps = 0"), "[imputation].nimps: expected a positive whole number"),
    (("name = \"MCAR\"", "name = \"J=12, n=4\""), "both named 'J=12, n=4'"),
    (("reps = 4", "reps = 4 ="), "not valid TOML"),
    (("clusters = 12\ncluster_size = 4\n[[", "clusters = 12\ncluster_size = 4\nunits = 5\n[["),
     "#1: units = 5 with clusters = 12; expected at least 3 level-3 units"),
    (("methods = [", "methods = [\"focal, two-level\", "), "'focal, two-level' compares with the three-level"),
    (("chains = 2", "chains = 2\nprior = \"prior4\""), "[imputation].prior: 'prior4' (did you mean 'prior3'?); expected one of prior1, prior2, prior3"),
])
def test_config_errors_name_file_and_key(tmp_path, edit, fragment):
    _refused(tmp_path, TINY.replace(*edit), fragment)


@pytest.mark.parametrize("setting,fragment", [
    # a negative variance reached the generator and came back as "column 2 (y) has no observed
    # values" from the imputation (issue 18); every variance is checked when the config loads
    ("s2 = -0.5", "[population]: s2 = -0.5; expected a positive number (the residual variance of y)"),
    ("tau00 = 0", "[population]: tau00 = 0; expected a positive number (the random-intercept variance)"),
    ("tau11 = -0.1", "tau11 = -0.1; expected a positive number"),
    ("var_f = -1", "var_f = -1; expected a positive number"),
    ("var_a = -0.2", "var_a = -0.2; expected 0 or a positive number"),
    ("tau01 = 0.5", "tau01 = 0.5 with tau00 = 0.3 and tau11 = 0.1: the random intercept and slope's "
                    "covariance matrix is not positive definite; expected |tau01| < sqrt(tau00 * tau11)"),
    ("s2 = nan", "[population].s2: expected a finite number, got nan"),
    ("w_rate = 1.0", "w_rate = 1; expected a number between 0 and 1"),
    ("cuts = [0.5, -0.5]", "cuts = [0.5, -0.5]; expected increasing thresholds"),
])
def test_variances_are_checked_when_the_config_loads(tmp_path, setting, fragment):
    _refused(tmp_path, TINY.replace('mechanism = "MAR"', f'mechanism = "MAR"\n{setting}'), fragment)


def test_a_variance_of_a_condition_names_the_condition(tmp_path):
    _refused(tmp_path, TINY.replace('mechanism = "MCAR"', 'mechanism = "MCAR"\ntau11 = -0.1'),
             "[[conditions]] #2: tau11 = -0.1; expected a positive number")


def _refused(tmp_path, text: str, fragment: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_study(p)
    assert str(p) in str(e.value) and fragment in str(e.value), str(e.value)


def test_cli_config_error_is_one_line_and_writes_nothing(tmp_path, capsys):
    p = write(tmp_path, TINY.replace("reps = 4", "reps = -1"))
    out = tmp_path / "res"
    assert main(["simulate", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[study].reps" in err[0]
    assert not out.exists()


def test_prior_is_part_of_the_study(tmp_path):
    """A prior other than the default is a different study (its own fingerprint, so a folder
    of prior2 results is not resumed with prior1) and reaches the model that the imputation
    programs are built from; the default prior, the default population and two-level designs
    leave the fingerprint of studies written before those keys existed unchanged."""
    import dataclasses
    import hashlib
    import json

    from jaximpute.api import many_spec
    st2 = load_study(write(tmp_path, TINY))
    st1 = load_study(write(tmp_path, TINY.replace("chains = 2", "chains = 2\nprior = \"prior1\""), "p1.toml"))
    assert (st2.prior, st1.prior) == ("prior2", "prior1")
    assert st1.fingerprint() != st2.fingerprint()
    legacy = dataclasses.asdict(st2)
    legacy.pop("source"), legacy.pop("prior"), legacy.pop("population")
    for c in legacy["conditions"]:                 # two-level designs: no three-level keys
        for k in ("units", "tau3", "var_x3"):
            c["design"].pop(k)
    assert st2.fingerprint() == hashlib.sha256(
        json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()[:16]
    _, inc = generate_batch(3, 0, np.arange(1), RandomSlope(12, 4))
    model, outcome = RandomSlope.MODELS["focal"]
    for prior in ("prior1", "prior2", "prior3"):
        spec, _ = many_spec(inc, ["cluster", "y", "x", "w"], model, 2, 10, 5, 1, 0, (), (), outcome,
                             options=(prior,))
        assert spec.prior.name == prior


def test_example_config_loads():
    st = load_study(ROOT / "configs" / "sim_slope.toml")
    assert [c.name for c in st.conditions] == ["J=50, n=20", "J=100, n=10"]
    assert st.reps == 1000 and "single-level" in st.methods


RI = """
[study]
population = "random_intercept"
reps = 4
batch = 2
seed = 13
""" + IMPUTATION + """[population]
clusters = 6
cluster_size = 5
[[conditions]]
icc = 0.2
[[conditions]]
icc = 0.5
"""


def test_a_config_chooses_the_random_intercept_population(tmp_path):
    """`population = "random_intercept"`: that population's designs (its keys, its default
    names), its methods (by default all four), its own fingerprint; the default population and
    a config that names it are the same study."""
    st = load_study(write(tmp_path, RI))
    assert st.population == "random_intercept"
    assert [c.name for c in st.conditions] == ["ICC=0.2, J=6, n=5", "ICC=0.5, J=6, n=5"]
    assert [c.design.icc for c in st.conditions] == [0.2, 0.5]
    assert st.methods == ("multilevel", "single-level", "listwise", "complete")
    assert st.conditions[0].truth()["ICC(y)"] == 0.2
    named = load_study(write(tmp_path, TINY.replace("[study]", '[study]\npopulation = "random_slope"'), "n.toml"))
    assert named.fingerprint() == load_study(write(tmp_path, TINY)).fingerprint()
    other = load_study(write(tmp_path, RI.replace("seed = 13", "seed = 14"), "o.toml"))
    assert other.fingerprint() != st.fingerprint()


@pytest.mark.parametrize("edit,fragment", [
    (('population = "random_intercept"', 'population = "random_intercep"'),
     "[study].population: 'random_intercep' (did you mean 'random_intercept'?); expected one of random_slope"),
    (("seed = 13", 'seed = 13\nmethods = ["focal"]'),
     "unknown method 'focal'; expected some of multilevel, single-level, listwise, complete"),
    (("icc = 0.2", "icc = 1.2"), "#1: icc = 1.2; expected a number between 0 and 1"),
    (("cluster_size = 5", "cluster_size = 5\ntau00 = 0.3"), "[population]: unknown key 'tau00'"),
    (("cluster_size = 5", "cluster_size = 5\nz_on_y = 0.95"), "leave no room for the noise variances"),
])
def test_random_intercept_config_errors(tmp_path, edit, fragment):
    _refused(tmp_path, RI.replace(*edit), fragment)


def test_example_configs_load():
    st = load_study(ROOT / "configs" / "sim_random_intercept.toml")
    assert st.population == "random_intercept" and [c.design.icc for c in st.conditions] == [0.2, 0.5]
    st = load_study(ROOT / "configs" / "sim_three_level.toml")
    assert st.population == "random_slope" and all(c.design.units for c in st.conditions)
