"""The typed configuration of a run, whichever front end wrote it.

A `Config` holds the variables and their roles, the model's terms, the schedule, the prior and the
outputs. The script parser (jaximpute.script) produces one from a Blimp-style script;
`jaximpute.impute(...)` builds one from its keyword arguments (`jaximpute.api.configure`), with
no script text in between. Whatever wrote it, the checks that involve several settings run here,
once (`problems`, `Config.check_runnable`), and its `Origin` says where each setting was given,
so every message points at the user's own text:

    ex.imp:7:10: ORDINAL: unknown variable 'z'; expected a name from VARIABLES
    impute(): ordinal: unknown variable 'z'; expected a column of the data

A position is a `Pos(line, col)` in both cases: in a script, the line and column; for keyword
arguments, the argument's number in `ARGUMENTS` (the model string is argument 1, its columns
the columns) and, in a list, the item's place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from .errors import ScriptError, did_you_mean

__all__ = ["Pos", "Name", "ModelTerm", "Origin", "Config", "Problem", "problems", "ARGUMENTS"]


@dataclass(frozen=True, order=True)
class Pos:
    """A 1-based line and column in the script text (or argument number and column)."""

    line: int
    col: int


@dataclass(frozen=True)
class Name:
    """A name as written (in its VARIABLES spelling once checked) and where it was written."""

    text: str
    pos: Pos
    written: str | None = field(default=None, compare=False)   # the spelling as written, where
                                                               # `text` is VARIABLES' spelling

    @property
    def as_written(self) -> str:
        return self.text if self.written is None else self.written


@dataclass(frozen=True)
class ModelTerm:
    """One term right of '~' in MODEL.

    kind is 'var' (``x``: names (x,)), 'slope' (``y:x``: a random slope of x in the model of y,
    names (y, x)) or 'product' (``a*b`` or ``a*b*c``: names in the order written).
    """

    kind: str
    names: tuple[Name, ...]
    pos: Pos

    @property
    def text(self) -> str:
        op = {"var": "", "slope": ":", "product": "*"}[self.kind]
        return op.join(n.text for n in self.names)


# Canonical command names in the order the "expected one of" list shows them: the settings of a
# configuration, whichever front end gives them.
COMMANDS = (
    "DATA", "VARIABLES", "ORDINAL", "NOMINAL", "MISSING", "MODEL", "OUTCOME", "CLUSTERID",
    "FIXED", "LEVEL1VARIABLES", "SEED", "BURN", "THIN", "NIMPS", "ITERATIONS", "CHAINS", "OUTFILE",
    "OPTIONS", "SAVE",
)
ALIASES = {"VARNAMES": "VARIABLES"}  # later Blimp spellings -> canonical


def canonical(word: str) -> str | None:
    """The canonical command for a word as written (any case), or None if it is no command."""
    upper = word.upper()
    return ALIASES.get(upper, upper if upper in COMMANDS else None)


# The keyword arguments of `impute` that set a command, in the order their positions number them
# (Pos.line): a message about a setting names the argument instead of a script line.
ARGUMENTS = {"MODEL": "model", "VARIABLES": "the data's columns", "ORDINAL": "ordinal",
             "NOMINAL": "nominal", "FIXED": "fixed", "OUTCOME": "outcome", "MISSING": "missing",
             "SEED": "seed", "BURN": "burn", "THIN": "thin", "NIMPS": "nimps",
             "ITERATIONS": "iterations", "CHAINS": "chains", "PROCESSORS": "processors",
             "OPTIONS": "options", "LEVEL1VARIABLES": "level1"}


def argument_pos(command: str, index: int = 0) -> Pos:
    """The position of `command`'s argument (index 0) or of its index-th item or column."""
    return Pos(list(ARGUMENTS).index(command) + 1, index)


@dataclass(frozen=True)
class Origin:
    """Where a configuration came from: a script (`label` is its name as the caller gave it,
    '<script>' for text) or keyword arguments (`label` the function, e.g. 'impute()').
    `commands` says where each command was given."""

    kind: str                                   # 'script' | 'arguments'
    label: str
    commands: Mapping[str, Pos]
    path: Path | None = None                    # the script file

    def where(self, pos: Pos | None, command: str | None) -> str:
        """A message's head: 'file:line:col: COMMAND: ' or 'impute(): argument[, column c]: '."""
        if self.kind == "arguments":
            arg = ARGUMENTS.get(command or "", (command or "").lower())
            col = f", column {pos.col}" if command == "MODEL" and pos is not None and pos.col else ""
            return f"{self.label}: {arg}{col}: " if command else f"{self.label}: "
        head = f"{self.label}:{pos.line}:{pos.col}" if pos is not None else self.label
        return f"{head}: {command + ': ' if command else ''}"

    def spell(self, command: str, value: str) -> str:
        """How the user writes `command` with `value`: 'OUTCOME: y;' or outcome='y'."""
        if self.kind == "arguments":
            return f"{ARGUMENTS[command]}={value!r}"
        return f"'{command}: {value};'"

    @property
    def names_known(self) -> str:
        """Where the valid variable names come from, for 'expected ...'."""
        return "a column of the data" if self.kind == "arguments" else "a name from VARIABLES"


@dataclass(frozen=True)
class Config:
    """A run's configuration: defaults are filled in for every setting not given. The front ends
    check it (`problems`) before they hand it on."""

    # variables and roles
    variables: tuple[Name, ...] | None
    ordinal: tuple[Name, ...]
    nominal: tuple[Name, ...]
    fixed: tuple[Name, ...]
    missing: float | None
    cluster_ids: tuple[Name, ...]
    outcome: Name | None
    # the model
    model: tuple[ModelTerm, ...]
    model_pos: Pos | None
    prior: str
    # the schedule
    seed: int | None
    burn: int | None
    thin: int | None
    nimps: int
    iterations: int | None
    chains: int
    processors: int | None
    # inputs and outputs
    data: Path | None
    outfile: Path | None
    output_format: str
    stacked0: bool
    header: bool
    psr: bool
    estimates: bool
    options: frozenset[str]
    # variables modelled at level 1 although nearly constant within clusters (spec.detect_levels)
    level1: tuple[Name, ...] = ()
    # the script language it was read in (jaximpute.dialect) and the rule that decided it
    dialect: str = ""
    dialect_reason: str = ""
    origin: Origin = field(compare=False, default=Origin("script", "<script>", {}))

    @property
    def path(self) -> Path | None:
        return self.origin.path

    @property
    def commands(self) -> Mapping[str, Pos]:
        return self.origin.commands

    def error(self, where: Pos | str, message: str) -> ScriptError:
        """A ScriptError for a position or a command name, formatted like parse errors.

        `message` is "what was wrong; expected what" without the command: the command is the one
        named by `where`, or for a position, the statement that holds it. A command that the
        configuration does not contain (say DATA, when a DataFrame was passed) is reported at
        line 1, column 1.
        """
        if isinstance(where, Pos):
            pos, command = where, self._command_at(where)
        else:
            command = canonical(where) or where.upper()
            pos = self.commands.get(command, Pos(1, 1))
        return ScriptError(self.origin.where(pos, command) + message)

    def check_runnable(self, *, data: bool = True, writes: bool = False,
                       outfile: Path | None = None) -> None:
        """Raise for the first setting a run still lacks, in one place for every front end (the
        command line, ``run_script`` and ``impute``): OUTFILE when files are written (`writes`;
        `outfile` is the path after any command-line override) and NIMPS > 0, DATA when the data
        come from the script (`data`), BURN, and THIN when NIMPS > 0. Checked before any data
        are read, so a configuration that cannot run says so at once."""
        if writes and self.nimps and outfile is None:
            raise self.error("OUTFILE", "required when NIMPS is greater than 0; expected "
                                        "e.g. OUTFILE: imps.csv; (or --outfile)")
        if data and self.data is None:
            raise self.error("DATA", "required; expected the path of the data file")
        if self.burn is None:
            raise self.error("BURN", "required; expected the number of burn-in sweeps, e.g. BURN: 1000;")
        if self.nimps and self.thin is None:
            raise self.error("THIN", "required when NIMPS is given; expected e.g. THIN: 100;")

    def _command_at(self, pos: Pos) -> str | None:
        """The command whose statement (or argument) contains `pos`: the last at or before it."""
        before = [(p, c) for c, p in self.commands.items() if p <= pos]
        return max(before)[1] if before else None


class Problem(Exception):
    """One thing wrong with a configuration; the earliest becomes the ScriptError. `command`
    None: the command of the statement at `pos` (`Config._command_at`)."""

    def __init__(self, pos: Pos, command: str | None, what: str, expected: str):
        super().__init__(what)
        self.pos, self.command, self.what, self.expected = pos, command, what, expected

    def message(self, origin: Origin, config: Config | None = None) -> str:
        command = self.command
        if command is None and config is not None:
            command = config._command_at(self.pos)
        return origin.where(self.pos, command) + f"{self.what}; expected {self.expected}"


def raise_first(found: list[Problem], origin: Origin, config: Config | None = None) -> None:
    """Raise the earliest problem as the one ScriptError (a user fixes a script top-down)."""
    if found:
        first = min(found, key=lambda p: p.pos)
        raise ScriptError(first.message(origin, config))


# ----------------------------------------------------------------------------- the checks

def problems(cfg: Config) -> list[Problem]:
    """What is wrong across settings, whichever front end wrote them: names against the data's
    variables, categorical lists, cluster ids against the model's terms, OUTCOME against MODEL,
    and a schedule the sampler cannot run (no burn-in, more sweeps than it can count)."""
    return [*_check_names(cfg), *_check_model(cfg), *_check_schedule(cfg)]


# The sampler counts a chain's sweeps in 32-bit integers (the device loop's bounds).
SWEEP_LIMIT = 2**31 - 1


def _check_schedule(cfg: Config) -> Iterator[Problem]:
    """A chain's sweeps, BURN + THIN x ceil(NIMPS / CHAINS) (or BURN + ITERATIONS), within
    SWEEP_LIMIT. (BURN is at least 1 as the script reader and `configure` read it: Blimp requires
    a burn-in, where the chains converge and whose PSR judges convergence.)"""
    def at(command: str) -> Pos:
        return cfg.commands.get(command, Pos(1, 1))

    if cfg.burn is None:
        return                       # check_runnable says BURN is required
    if cfg.burn > SWEEP_LIMIT:
        yield Problem(at("BURN"), "BURN", f"{cfg.burn} burn-in iterations are more than the "
                      f"sampler can count ({SWEEP_LIMIT}: it counts sweeps in 32-bit integers)",
                      f"at most {SWEEP_LIMIT}")
        return
    room = SWEEP_LIMIT - cfg.burn
    if cfg.nimps and cfg.thin:
        saves = -(-cfg.nimps // max(cfg.chains, 1))
        if saves * cfg.thin > room:
            most = (room // cfg.thin) * max(cfg.chains, 1)
            yield Problem(at("NIMPS"), "NIMPS",
                          f"{cfg.nimps} imputations with THIN {cfg.thin} and {cfg.chains} "
                          f"chain{'s' if cfg.chains != 1 else ''} take {cfg.burn + saves * cfg.thin} "
                          f"sweeps a chain, more than the sampler can count ({SWEEP_LIMIT}: it "
                          "counts sweeps in 32-bit integers)",
                          f"at most {most} imputations with this BURN, THIN and CHAINS")
    elif not cfg.nimps and cfg.iterations and cfg.iterations > room:
        yield Problem(at("ITERATIONS"), "ITERATIONS",
                      f"{cfg.iterations} iterations after BURN {cfg.burn} are more than the "
                      f"sampler can count ({SWEEP_LIMIT} sweeps: it counts them in 32-bit integers)",
                      f"at most {room}")


def _named(cfg: Config) -> Iterator[Name]:
    """Every name that must be a variable of the data."""
    yield from cfg.ordinal
    yield from cfg.nominal
    yield from cfg.fixed
    yield from cfg.level1
    yield from cfg.cluster_ids
    if cfg.outcome is not None:
        yield cfg.outcome
    for term in cfg.model:
        yield from term.names


def _check_names(cfg: Config) -> Iterator[Problem]:
    if cfg.variables is not None:
        known = {v.text.lower() for v in cfg.variables}
        spellings = [v.text for v in cfg.variables]
        for name in _named(cfg):
            if name.text.lower() not in known:
                yield Problem(name.pos, None,
                              f"unknown variable {name.text!r}{did_you_mean(name.text, spellings)}",
                              cfg.origin.names_known)
    ordinal = {n.text.lower(): n for n in cfg.ordinal}
    for name in cfg.nominal:
        other = ordinal.get(name.text.lower())
        if other is not None:
            later = name if other.pos < name.pos else other
            yield Problem(later.pos, None, f"{name.as_written!r} is both ORDINAL and NOMINAL",
                          "each categorical variable in one of the two")


def _check_model(cfg: Config) -> Iterator[Problem]:
    ids = {n.text.lower() for n in cfg.cluster_ids}
    for term in cfg.model:
        for name in term.names:
            if name.text.lower() in ids:
                yield Problem(name.pos, "MODEL", f"cluster id {name.text!r} is also used as a model term",
                              "cluster ids only left of '~' (or in CLUSTERID), not among the terms")
    if cfg.model_pos is None:      # MODEL could not be read: its own problem is the one to report
        return
    outcome = cfg.outcome
    in_model = {n.text.lower() for t in cfg.model for n in t.names}
    if outcome is not None and outcome.text.lower() not in in_model:
        yield Problem(outcome.pos, "OUTCOME", f"{outcome.text!r} is not in MODEL",
                      "a variable that MODEL names right of '~'")
    for term in cfg.model:
        if term.kind != "slope":
            continue
        y = term.names[0]
        if outcome is None and "OUTCOME" not in cfg.commands:
            yield Problem(term.pos, "MODEL", f"the random slope {term.text!r} needs an OUTCOME",
                          cfg.origin.spell("OUTCOME", y.text))
        elif outcome is not None and y.text.lower() != outcome.text.lower():
            yield Problem(y.pos, "MODEL",
                          f"the random slope {term.text!r} is not in the model of OUTCOME "
                          f"{outcome.text!r}", f"'{outcome.text}:{term.names[1].text}'")
