"""A simulation study's config (TOML): ``load_study`` reads and checks it into a ``Study``.

Config (``configs/sim_slope.toml`` is a complete example)::

    [study]
    reps = 1000            # replications per condition
    batch = 100            # data sets per compiled program
    seed = 20261130
    methods = ["focal", "random intercept", "single-level", "listwise", "complete"]
    population = "random_slope"   # the default; or "random_intercept"

    [imputation]
    nimps = 20
    burn = 2000
    thin = 100
    chains = 2

    [population]           # shared by every condition (the population's design fields:
    b = [0.0, 0.5, 0.3, 0.25]      # studies.populations.RandomSlope or RandomIntercept)
    mechanism = "MAR"      # MAR, MCAR or MNAR

    [[conditions]]
    clusters = 50
    cluster_size = 20

    [[conditions]]
    name = "J=100, n=10"   # optional; default "J=.., n=.." plus the mechanism if not MAR
    clusters = 100
    cluster_size = 10

Errors name the file and the key (``ConfigError``), before any work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import JaxImputeError, did_you_mean
from ..kernels.structure import PRIORS
from .analysis import truth_of
from .populations import POPULATIONS, THREE_LEVEL_ONLY, Design, all_methods

try:                      # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MECHANISMS = ("MAR", "MCAR", "MNAR")
DEFAULT_POPULATION = "random_slope"


class ConfigError(JaxImputeError):
    """A simulation config that cannot be read (file and key named in the message)."""


@dataclass(frozen=True)
class Condition:
    """One cell of the study's grid: a name and its population design."""

    name: str
    design: Design

    def truth(self) -> dict:
        return truth_of(self.design)


@dataclass(frozen=True)
class Study:
    conditions: tuple[Condition, ...]
    reps: int = 1000
    batch: int = 100
    seed: int = 0
    methods: tuple[str, ...] = ("focal", "random intercept", "listwise", "complete")
    nimps: int = 20
    burn: int = 2000
    thin: int = 100
    chains: int = 2
    prior: str = "prior2"
    population: str = DEFAULT_POPULATION
    source: str = field(default="<config>", compare=False)

    @property
    def batches_per_condition(self) -> int:
        return -(-self.reps // self.batch)

    def units(self) -> list[tuple[int, int]]:
        """All (condition, batch) pairs, in the order a single process runs them."""
        return [(c, b) for c in range(len(self.conditions)) for b in range(self.batches_per_condition)]

    def fingerprint(self) -> str:
        """A hash of everything that determines the results (not the source path)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        # keys added later, at their defaults, leave out: studies checkpointed before they
        # existed still resume
        for key, default in (("prior", "prior2"), ("population", DEFAULT_POPULATION)):
            if d[key] == default:
                d.pop(key)
        for c in d["conditions"]:
            if "units" in c["design"] and not c["design"]["units"]:
                for k in ("units", "tau3", "var_x3"):
                    c["design"].pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


_SECTIONS = {"study": ("reps", "batch", "seed", "methods", "population"),
             "imputation": ("nimps", "burn", "thin", "chains", "prior"),
             "population": (),            # the population's design fields (_design)
             "conditions": ()}


def _design(cls, values: dict, where: str, path: str) -> Design:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kw = {}
    for k, v in values.items():
        if k == "name":
            continue
        if k not in fields:
            raise ConfigError(f"{path}: {where}: unknown key '{k}'{did_you_mean(k, fields)}; "
                              f"expected one of {', '.join(fields)}")
        default = fields[k].default
        if isinstance(default, tuple):
            if not isinstance(v, list) or not all(isinstance(e, (int, float)) for e in v):
                raise ConfigError(f"{path}: {where}.{k}: expected a list of numbers, got {v!r}")
            if k == "b" and len(v) != 4:
                raise ConfigError(f"{path}: {where}.b: expected 4 numbers (intercept, x, w, x:w), "
                                  f"got {len(v)}")
            v = tuple(float(e) for e in v)
            if not all(math.isfinite(e) for e in v):
                raise ConfigError(f"{path}: {where}.{k}: expected finite numbers, got {list(v)}")
        elif isinstance(default, str):
            if k == "mechanism" and v not in MECHANISMS:
                raise ConfigError(f"{path}: {where}.mechanism: '{v}'; expected one of "
                                  f"{', '.join(MECHANISMS)}")
        elif isinstance(default, int) and not isinstance(default, bool):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{path}: {where}.{k}: expected a positive whole number, got {v!r}")
        elif not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{path}: {where}.{k}: expected a finite number, got {v!r}")
        else:
            v = float(v)
        kw[k] = v
    d = cls(**kw)
    why = d.problem()
    if why:
        raise ConfigError(f"{path}: {where}: {why}")
    return d


def load_study(path: str | Path) -> Study:
    """Read and check a study config (TOML); errors name the file and the key."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8 text; "
                          "expected a TOML config (configs/sim_slope.toml is an example)") from None
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    if not cfg:
        raise ConfigError(f"{path}: the config is empty; expected [study], [imputation], "
                          "[population] and [[conditions]] tables (configs/sim_slope.toml is an "
                          "example)")
    for sec, val in cfg.items():
        if sec not in _SECTIONS:
            raise ConfigError(f"{path}: unknown section [{sec}]{did_you_mean(sec, _SECTIONS)}; "
                              f"expected {', '.join('[' + s + ']' for s in _SECTIONS)}")
        if sec == "conditions":
            if not isinstance(val, list) or not all(isinstance(c, dict) for c in val):
                raise ConfigError(f"{path}: conditions: expected [[conditions]] tables, got {val!r}")
        elif not isinstance(val, dict):
            raise ConfigError(f"{path}: {sec}: expected a [{sec}] table (a section header "
                              f"[{sec}] and its keys), got {val!r}")
        if sec != "population" and sec != "conditions":
            for k in val:
                if k not in _SECTIONS[sec]:
                    raise ConfigError(f"{path}: [{sec}]: unknown key '{k}'{did_you_mean(k, _SECTIONS[sec])}; "
                                      f"expected one of {', '.join(_SECTIONS[sec])}")
    population = cfg.get("study", {}).get("population", DEFAULT_POPULATION)
    if population not in POPULATIONS:
        raise ConfigError(f"{path}: [study].population: {population!r}"
                          f"{did_you_mean(str(population), POPULATIONS)}; expected one of "
                          f"{', '.join(POPULATIONS)}")
    cls = POPULATIONS[population]
    methods = all_methods(population)
    kw: dict = {"population": population, "methods": cls.DEFAULT_METHODS}
    for sec in ("study", "imputation"):
        for k, v in cfg.get(sec, {}).items():
            if k == "population":
                continue
            if k == "methods":
                if not isinstance(v, list) or not v:
                    raise ConfigError(f"{path}: [study].methods: expected a list such as "
                                      f"[\"{methods[0]}\", \"listwise\"]")
                for m in v:
                    if m not in methods:
                        raise ConfigError(f"{path}: [study].methods: unknown method '{m}'"
                                          f"{did_you_mean(str(m), methods)}; expected some of "
                                          f"{', '.join(methods)}")
                kw[k] = tuple(dict.fromkeys(v))
            elif k == "prior":
                if v not in PRIORS:
                    raise ConfigError(f"{path}: [imputation].prior: {v!r}{did_you_mean(str(v), PRIORS)}; "
                                      f"expected one of {', '.join(PRIORS)} (as in a script's OPTIONS)")
                kw[k] = v
            elif not isinstance(v, int) or isinstance(v, bool) or v < (0 if k == "seed" else 1):
                raise ConfigError(f"{path}: [{sec}].{k}: expected a positive whole number, got {v!r}")
            else:
                kw[k] = v
    base = cfg.get("population", {})
    _design(cls, base, "[population]", str(path))
    conds = cfg.get("conditions") or [{}]
    if not isinstance(conds, list):
        raise ConfigError(f"{path}: conditions: expected [[conditions]] tables")
    out = []
    for i, c in enumerate(conds):
        d = _design(cls, {**base, **c}, f"[[conditions]] #{i + 1}", str(path))
        out.append(Condition(str(c.get("name") or d.name), d))
    two_level = [c.name for c in out if not c.design.units]
    for m in kw["methods"]:
        if m in THREE_LEVEL_ONLY and two_level:
            raise ConfigError(f"{path}: [study].methods: '{m}' compares with the three-level model, "
                              f"but condition '{two_level[0]}' is two-level; expected units = K in "
                              "every condition, or no such method")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two conditions are both named '{next(n for n in names if names.count(n) > 1)}';"
                          " expected distinct names (give each a name = ...)")
    return Study(tuple(out), source=str(path), **kw)
