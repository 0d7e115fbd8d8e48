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
    (dict(model="school ~ y x", burn=-1), "impute(): burn: -1 is not a whole number of at least 0"),
    (dict(model="school ~ y x", thin=0), "impute(): thin: 0 is not a whole number of at least 1"),
    (dict(model="school ~ y x", processors=0), "impute(): processors: 0 is not a whole number"),
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
