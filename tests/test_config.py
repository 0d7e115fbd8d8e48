"""One configuration under every front end (jaximpute.config): a script and `impute`'s keyword
arguments give the same `Config`, checked by the same code, and a message about an argument
names the argument (not a line of some generated script)."""

from __future__ import annotations

import pytest

from jaximpute.api import configure
from jaximpute.config import Config
from jaximpute.errors import ScriptError
from jaximpute.script import parse_script

NAMES = ("school", "y", "x", "w", "o")


def _settings(c: Config) -> dict:
    """A configuration's content, without where each setting was written."""
    names = lambda ns: tuple(n.text for n in ns)  # noqa: E731
    return dict(variables=names(c.variables or ()), ordinal=names(c.ordinal), fixed=names(c.fixed),
                ids=names(c.cluster_ids), outcome=c.outcome.text if c.outcome else None,
                model=tuple((t.kind, names(t.names)) for t in c.model), prior=c.prior,
                schedule=(c.seed, c.burn, c.thin, c.nimps, c.iterations, c.chains, c.processors),
                outputs=(c.output_format, c.psr, c.estimates, c.options))


def test_a_script_and_the_keyword_arguments_give_the_same_configuration():
    script = parse_script("VARIABLES: school y x w o; ORDINAL: o; MODEL: school ~ y:x w o x*w;"
                          "OUTCOME: y; BURN: 500; THIN: 50; NIMPS: 10; CHAINS: 4 processors 2;"
                          "SEED: 7; OPTIONS: prior1 estimates psr;")
    args = configure(NAMES, "school ~ y:x w o x*w", ordinal=["o"], outcome="y", burn=500, thin=50,
                     nimps=10, chains=4, processors=2, seed=7, options=["prior1", "estimates", "psr"])
    assert _settings(script) == _settings(args)
    assert args.origin.kind == "arguments" and script.origin.kind == "script"


@pytest.mark.parametrize("kwargs, message", [
    (dict(model="school ~ y q"), "impute(): model, column 12: unknown variable 'q'; expected a column of the data"),
    (dict(model="school ~ y x", ordinal=["z"]), "impute(): ordinal: unknown variable 'z'"),
    (dict(model="school ~ y:x"), "impute(): model, column 10: the random slope 'y:x' needs an OUTCOME; "
                                 "expected outcome='y'"),
    (dict(model="school ~ y x", outcome="w"), "impute(): outcome: 'w' is not in MODEL"),
    (dict(model="school ~ y x", burn=-1), "impute(): burn: -1 is not a whole number of at least 1"),
    (dict(model="school ~ y x", thin=0), "impute(): thin: 0 is not a whole number of at least 1"),
    # the sampler needs a burn-in, and counts a chain's sweeps in 32-bit integers
    (dict(model="school ~ y x", burn=0), "impute(): burn: 0 is not a whole number of at least 1"),
    (dict(model="school ~ y x", burn=20, thin=5, nimps=10**9),
     "impute(): nimps: 1000000000 imputations with THIN 5 and 2 chains take 2500000020 sweeps a "
     "chain, more than the sampler can count (2147483647"),
    (dict(model="school ~ y x", burn=2**31, nimps=0), "impute(): burn: 2147483648 burn-in iterations "
                                                      "are more than the sampler can count"),
    (dict(model="school ~ y x", burn=10, nimps=0, iterations=2**31),
     "impute(): iterations: 2147483648 iterations after BURN 10 are more than the sampler can count"),
    (dict(model="school ~ y x", processors=-1), "impute(): processors: -1 is not a whole number"),
    (dict(model="school ~ y x:"), "impute(): model, column 13: dangling ':' after 'x'"),
    (dict(model="school ~ y school"), "impute(): model, column 12: cluster id 'school' is also used"),
    (dict(model="school ~ y x", options=["prior1", "prior3"]),
     "impute(): options: 'prior3' conflicts with 'prior1'; expected one prior"),
    (dict(model="school ~ y x", options="estimate"),
     "impute(): options: unknown option 'estimate' (did you mean 'estimates'?)"),
])
def test_a_message_names_the_argument(kwargs, message):
    with pytest.raises(ScriptError) as info:
        configure(NAMES, **kwargs)
    assert str(info.value).startswith(message), str(info.value)


def test_the_earliest_argument_is_reported_first():
    """As in a script, the first problem in argument order wins: the model before the lists."""
    with pytest.raises(ScriptError, match=r"^impute\(\): model, column 12: unknown variable 'q'"):
        configure(NAMES, "school ~ y q", ordinal=["z"], burn=-1)


def test_lists_are_read_as_a_script_reads_them_and_names_take_the_data_spelling():
    c = configure(("School", "y", "a1", "a2", "a3"), "school ~ Y a1 a2 a3", ordinal="a1-a3",
                  options="psr, estimates", iterations=0, processors=0)
    assert [n.text for n in c.ordinal] == ["a1", "a2", "a3"]
    assert c.cluster_ids[0].text == "School" and c.model[0].names[0].text == "y"
    assert c.model[0].names[0].as_written == "Y"
    assert c.options == frozenset({"psr", "estimates"})
    assert c.iterations is None and c.processors is None      # 0: not given, as before
    with pytest.raises(ScriptError, match=r"^impute\(\): fixed: 'W' is listed twice"):
        configure(NAMES, "school ~ y x", fixed=["w", "W"])
    with pytest.raises(ScriptError, match=r"^impute\(\): outcome: no name given"):
        configure(NAMES, "school ~ y:x", outcome="")
    with pytest.raises(ScriptError, match=r"^impute\(\): seed: .*below 2\*\*63"):
        configure(NAMES, "school ~ y x", seed=2**63)


def test_a_script_reports_its_own_first_problem():
    """A MODEL that could not be read is the problem reported, not the OUTCOME that refers to
    it; a CLUSTERID beside MODEL's ids is checked against VARIABLES too."""
    with pytest.raises(ScriptError, match="MODEL: the term 'y' is listed twice"):
        parse_script("VARIABLES: c y x; OUTCOME: y; MODEL: c ~ y y;")
    with pytest.raises(ScriptError, match="CLUSTERID: unknown variable 'q'"):
        parse_script("VARIABLES: c y x; CLUSTERID: q; MODEL: c ~ y x;")
