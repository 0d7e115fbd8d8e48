"""The Python API: `impute(...)` for DataFrames and files, `run_script(path)` for Blimp scripts.

Both return an `ImputationResult` holding the imputed data sets (DataFrames, and one stacked
frame with an `imputation` column), the PSR table, optional parameter summaries and the report as
data. Writing files is explicit (`result.write()`); the command line calls it for OUTFILE.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data import DataTable, from_dataframe, read_table
from .errors import DataError, ModelError, ScriptError, did_you_mean
from .kernels.structure import SamplerOptions
from .posterior import imputed_tables, parameter_table, summaries
from .progress import Progress
from .report import GROUP_TITLES, Report, acceptance_rates, build_report, category_counts
from .run import RawDraws, Settings, sample
from .config import Config, ModelTerm, Name, Origin, Problem, argument_pos, problems, raise_first
from .script import OPTION_WORDS, option_clash, parse_model, parse_names, read_script
from .spec import ModelSpec, build_spec

# why draws fail under prior3 (kernels.structure.Prior), for the errors of `impute` and studies
PRIOR3_FAILURE = ("under prior3 (IW(0, 0)) the posterior is improper when a random effect's variance "
                  "may be near zero, and a chain drifted into a zero variance")


@dataclass
class ImputationResult:
    config: Config
    spec: ModelSpec
    settings: Settings
    raw: RawDraws
    imputed: np.ndarray               # (NIMPS, N, V) in the table's rows and columns
    psr_table: np.ndarray             # (20, P) burn-in PSR of every monitored parameter
    parameters: list                  # (block, group, term) per monitored parameter
    estimates: pd.DataFrame | None
    report: Report

    @property
    def names(self) -> list[str]:
        return list(self.spec.table.names)

    @property
    def imputations(self) -> list[pd.DataFrame]:
        return [pd.DataFrame(a, columns=self.names) for a in self.imputed]

    @property
    def stacked(self) -> pd.DataFrame:
        frames = []
        for m, a in enumerate(self.imputed, start=1):
            f = pd.DataFrame(a, columns=self.names)
            f.insert(0, "imputation", m)
            frames.append(f)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["imputation"] + self.names)

    @property
    def psr(self) -> pd.DataFrame:
        """Blimp's burn-in PSR table (largest value per group and window)."""
        return self.report.psr_all

    def analyze(self, formula: str, *, reml: bool = False, df_com: float | None = None):
        """Fit an lme4-style mixed model to every imputed data set and pool by Rubin's rules
        (as mitml::testEstimates with var.comp = TRUE). Returns an AnalysisResult."""
        from .analyze import analyze
        return analyze(self.imputations, formula, reml=reml, df_com=df_com)

    def write(self, outfile: str | Path | None = None, fmt: str | None = None, *,
              include_original: bool | None = None, header: bool | None = None) -> list[Path]:
        """Write the imputations in Blimp's stacked or separate format (atomically)."""
        from .output import write_separate, write_stacked

        s = self.config
        outfile = Path(outfile) if outfile is not None else s.outfile
        if outfile is None:
            raise ScriptError("no output file: give OUTFILE in the script or an outfile argument")
        fmt = fmt or s.output_format
        header = s.header if header is None else header
        protect = [p for p in (s.data, s.path) if p is not None]
        if fmt == "separate":
            paths = write_separate(outfile, self.spec.table, self.imputed, header=header,
                                   protect=protect)
        else:
            inc = s.stacked0 if include_original is None else include_original
            paths = [write_stacked(outfile, self.spec.table, self.imputed, include_original=inc,
                                   header=header, protect=protect)]
        return [Path(p) for p in paths]


# ------------------------------------------------------------------------- entry points

def run_script(path: str | Path, *, progress: bool = True, stream=None) -> ImputationResult:
    """Read a Blimp-style script and its data, and run it (files are not written; see write)."""
    script = read_script(path)
    script.check_runnable()
    assert script.data is not None
    table = read_table(script.data, [n.text for n in script.variables] if script.variables else None,
                       script.missing)
    return run(script, table, progress=progress, stream=stream)


def configure(names, model: str, *, nimps: int = 20, burn: int = 1000, thin: int = 100,
              chains: int = 2, seed: int | None = None, fixed=(), ordinal=(), nominal=(),
              outcome: str | None = None, missing: float | None = None, options=(),
              iterations: int | None = None, processors: int | None = None, level1=(),
              label: str = "impute()") -> Config:
    """The configuration (jaximpute.config) of `impute`'s arguments for data with columns
    `names`, built directly and checked as a script's is; a message names the argument, e.g.
    "impute(): ordinal: unknown variable 'z'; expected a column of the data".

    A list argument is a list of names, or one string of names as a script writes them
    ("y x", "a1-a4"); names are matched to the data's columns without regard to case and kept
    in the data's spelling. `iterations` and `processors` of 0 mean "not given"."""
    processors = processors or None
    iterations = iterations or None
    given = {"MODEL": True, "VARIABLES": True, "ORDINAL": ordinal, "NOMINAL": nominal,
             "FIXED": fixed, "OUTCOME": outcome is not None, "MISSING": missing is not None,
             "SEED": seed is not None, "BURN": True, "THIN": True, "NIMPS": True,
             "ITERATIONS": iterations is not None, "CHAINS": True,
             "PROCESSORS": processors is not None, "OPTIONS": options, "LEVEL1VARIABLES": level1}
    origin = Origin("arguments", label, {c: argument_pos(c) for c, g in given.items() if g})
    found: list[Problem] = []
    spelling = {str(n).lower(): str(n) for n in names}

    def whole(command: str, value, minimum: int) -> int:
        if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                or not minimum <= value < 2**63):
            found.append(Problem(argument_pos(command), command, f"{value!r} is not a whole number "
                                 f"of at least {minimum}", f"an integer >= {minimum} (below 2**63)"))
            return minimum
        return int(value)

    def canon(name: Name) -> Name:
        """The data's spelling, keeping where and how the name was written."""
        text = spelling.get(name.text.lower(), name.text)
        return Name(text, name.pos, None if text == name.text else name.text)

    def listed(command: str, values) -> tuple[Name, ...]:
        texts = (parse_names(values, label, command) if isinstance(values, str)
                 else [str(v) for v in values])
        out = tuple(canon(Name(t, argument_pos(command, i + 1))) for i, t in enumerate(texts))
        seen = set()
        for n in out:
            if n.text.lower() in seen:
                found.append(Problem(n.pos, command, f"{n.as_written!r} is listed twice",
                                     "each variable once"))
            seen.add(n.text.lower())
        return out

    if outcome is not None and not str(outcome).strip():
        raise ScriptError(origin.where(argument_pos("OUTCOME"), "OUTCOME")
                          + "no name given; expected the dependent variable of the focal model")
    ids, terms, model_pos = parse_model(model, label)
    ids = tuple(canon(n) for n in ids)
    terms = tuple(ModelTerm(t.kind, tuple(canon(n) for n in t.names), t.pos) for t in terms)
    words = [w.lower() for w in (options.replace(",", " ").split() if isinstance(options, str)
                                 else map(str, options))]
    seen: list[str] = []
    for i, w in enumerate(words):
        if w not in OPTION_WORDS:
            found.append(Problem(argument_pos("OPTIONS", i + 1), "OPTIONS",
                                 f"unknown option {w!r}{did_you_mean(w, OPTION_WORDS)}",
                                 "options from " + ", ".join(OPTION_WORDS)))
        elif (clash := option_clash(w, seen)) is not None:
            found.append(Problem(argument_pos("OPTIONS", i + 1), "OPTIONS",
                                 f"{w!r} conflicts with {clash[0]!r}", clash[1]))
        seen.append(w)
    flags = frozenset(words)
    nimps = whole("NIMPS", nimps, 0)
    if iterations or not nimps:
        iterations = iterations or max(thin, 1000)
    priors = [p for p in ("prior1", "prior2", "prior3") if p in flags]
    config = Config(
        variables=tuple(Name(str(n), argument_pos("VARIABLES", i + 1)) for i, n in enumerate(names)),
        ordinal=listed("ORDINAL", ordinal), nominal=listed("NOMINAL", nominal),
        fixed=listed("FIXED", fixed), missing=missing, cluster_ids=ids,
        outcome=canon(Name(str(outcome), argument_pos("OUTCOME", 1))) if outcome is not None else None,
        model=terms, model_pos=model_pos, prior=priors[0] if priors else "prior2",
        seed=None if seed is None else whole("SEED", seed, 0), burn=whole("BURN", burn, 1),
        thin=whole("THIN", thin, 1), nimps=nimps,
        iterations=None if iterations is None else whole("ITERATIONS", iterations, 1),
        chains=whole("CHAINS", chains, 1),
        processors=None if processors is None else whole("PROCESSORS", processors, 1),
        data=None, outfile=None, output_format="separate" if flags & {"separate", "sep"} else "stacked",
        stacked0="stacked0" in flags, header="header" in flags, psr="psr" in flags,
        estimates="estimates" in flags, options=flags, level1=listed("LEVEL1VARIABLES", level1), origin=origin)
    raise_first(found + problems(config), origin, config)
    return config


def impute(data, model: str, *, nimps: int = 20, burn: int = 1000, thin: int = 100,
           chains: int = 2, seed: int | None = None, fixed=(), ordinal=(), outcome: str | None = None,
           missing: float | None = None, options=(), iterations: int | None = None,
           progress: bool = False, processors: int | None = None, level1=(),
           stream=None, sampler: SamplerOptions | None = None) -> ImputationResult:
    """Impute a DataFrame (or a CSV path with a header row) with a Blimp-style MODEL string.

    Example: ``impute(df, "school ~ y x", nimps=20, burn=1000, thin=100, seed=1)``.
    `processors` caps the programs run at once on a CPU (default: one per core; 1 runs them one
    after the other); it never changes a result (see jaximpute.execution.program_layout).
    `level1` names variables to model at level 1 although they are constant within nearly every
    cluster (the script's LEVEL1VARIABLES command; jaximpute.spec.detect_levels). `sampler`
    (``jaximpute.kernels.structure.SamplerOptions``) switches moves that leave the posterior
    unchanged, for comparisons such as the tests'.
    """
    table = data if isinstance(data, DataTable) else (
        from_dataframe(data, missing) if isinstance(data, pd.DataFrame) else read_table(data, None, missing))
    config = configure(table.names, model, nimps=nimps, burn=burn, thin=thin, chains=chains, seed=seed,
                       fixed=fixed, ordinal=ordinal, outcome=outcome, missing=missing, options=options,
                       iterations=iterations, processors=processors, level1=level1)
    return run(config, table, progress=progress, stream=stream, sampler=sampler)


def many_spec(datasets, names, model, nimps, burn, thin, chains, seed, fixed, ordinal, outcome,
              processors=None, options=()):
    """The spec and settings of impute_many's batch (the model set up from the first data set)."""
    table = DataTable(tuple(names), datasets[0], "<simulated>",
                      np.zeros(len(names), bool), None, False)
    config = configure(names, model, nimps=nimps, burn=burn, thin=thin, chains=chains, seed=seed,
                       fixed=fixed, ordinal=ordinal, outcome=outcome, options=options,
                       processors=processors, label="impute_many()")
    spec = build_spec(config, table)
    settings = Settings(burn=burn, thin=thin, nimps=nimps, chains=chains, seed=seed,
                        processors=processors)
    # missing-cell lists differ per data set; the model's incomplete set must cover all of them
    incomplete = np.isnan(datasets).any(axis=1)                         # (D, V)
    for v in spec.x_vars:
        if incomplete[:, v.column].any() and spec.x_names.index(v.name) not in spec.incomplete:
            d = int(np.flatnonzero(incomplete[:, v.column])[0])
            raise DataError(f"impute_many(): column {v.column + 1} ({v.name}) is complete in data "
                            f"set 1, which sets the model up, but incomplete in data set {d + 1}; "
                            "expected a first data set in which every variable that is ever "
                            "incomplete is incomplete (put such a data set first)")
    return spec, settings


def impute_many_memory(datasets, names, model: str, *, nimps: int = 20, burn: int = 1000,
                       thin: int = 100, chains: int = 2, seed: int = 0, fixed=(), ordinal=(),
                       outcome: str | None = None, options=()) -> int | None:
    """Device bytes impute_many's compiled program needs for this batch (XLA's account; the
    program is compiled, not run): for choosing a simulation study's batch size."""
    from .run import program_memory
    datasets = np.asarray(datasets, dtype=np.float64)
    spec, settings = many_spec(datasets, names, model, nimps, burn, thin, chains, seed, fixed,
                               ordinal, outcome, options=options)
    return program_memory(spec, settings, list(datasets))


def impute_many(datasets, names, model: str, *, nimps: int = 20, burn: int = 1000, thin: int = 100,
                chains: int = 2, seed: int = 0, fixed=(), ordinal=(), outcome: str | None = None,
                options=(), progress: bool = False, stream=None, processors: int | None = None):
    """Impute a batch of same-shaped data sets in one compiled program (simulation studies).

    `datasets` is a (D, N, V) array (np.nan = missing) with columns `names`; every data set must
    have the same rows and clusters (only the values and which cells are missing may differ).
    The model (levels, standardisation) is set up from the first data set. Returns a
    (D, NIMPS, N, V) array of imputed data sets and the (D, 20, P) burn-in PSR array.
    `options` (a prior: ``"prior1"``, ``"prior2"``, ``"prior3"``) and `processors`: as in `impute`.
    """
    datasets = np.asarray(datasets, dtype=np.float64)
    spec, settings = many_spec(datasets, names, model, nimps, burn, thin, chains, seed, fixed,
                               ordinal, outcome, processors, options)
    prog = Progress(settings.sweeps_per_chain, stream=stream, enabled=progress) if progress else None
    raw = sample(spec, settings, datasets=list(datasets), progress=prog)
    out = np.stack([imputed_tables(spec, raw, nimps, chains, dataset=d, values=datasets[d])
                    for d in range(len(datasets))])
    return out, raw.burn_psr


def run(config: Config, table: DataTable, *, progress: bool = True, stream=None,
        sampler: SamplerOptions | None = None) -> ImputationResult:
    """Run a configuration (from a script or `configure`) on a table."""
    t0 = time.perf_counter()
    config.check_runnable(data=False)
    spec = build_spec(config, table)
    if sampler is not None:
        spec.sampler = sampler
    seed_drawn = config.seed is None
    seed = secrets.randbelow(2**31) if config.seed is None else int(config.seed)
    assert config.burn is not None                      # check_runnable
    settings = Settings(burn=config.burn, thin=config.thin or 1, nimps=config.nimps,
                        chains=config.chains, seed=seed, processors=config.processors,
                        keep_post=bool(config.estimates) or (not config.nimps and bool(config.iterations)),
                        iterations=config.iterations or 0)
    _check_memory(config, spec, settings)
    prog = Progress(settings.sweeps_per_chain, stream=stream, enabled=progress)
    raw = sample(spec, settings, progress=prog if progress else None)
    labels = parameter_table(spec, raw.structure)
    _check_finite(spec, raw, labels, str(config.path) if config.path else "the model")
    imputed = imputed_tables(spec, raw, settings.nimps, settings.chains)
    estimates = summaries(spec, raw, labels) if settings.keep_post else None
    report = build_report(config, spec, settings, raw, labels, estimates, seed_drawn,
                          time.perf_counter() - t0)
    report.categories = category_counts(spec, imputed)
    report.acceptance = acceptance_rates(spec, settings, raw)
    return ImputationResult(config, spec, settings, raw, imputed, raw.burn_psr[0], labels, estimates, report)


def machine_memory() -> int | None:
    """Bytes of physical memory of this machine (None where the system does not say)."""
    import os
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # the loop returns


def _check_memory(config: Config, spec: ModelSpec, settings: Settings) -> None:
    """Refuse, before sampling, a run whose kept draws cannot fit in this machine's memory: the
    imputed data sets (NIMPS x rows x columns, 8 bytes a value, on the host) and, at least, what
    the device program keeps per chain (the burn-in trace and the saved imputations, 4 bytes a
    value). A lower bound: a run refused here would fail for want of memory anyway, after its
    compile (or its sampling)."""
    ram = machine_memory()
    if not ram:
        return
    n, v = spec.table.values.shape
    width = len(spec.x_names)                                   # <= the values monitored a sweep
    cells = sum(spec.x_vars[i].n_missing for i in spec.incomplete)
    saves = settings.num_saves
    post = saves * settings.sweeps_per_save if settings.keep_post else 0
    imputations = 8 * settings.nimps * n * v + 4 * settings.chains * saves * (width + cells)
    burn = 4 * settings.chains * settings.burn * width
    trace = 4 * settings.chains * post * width
    total = imputations + burn + trace
    if total <= ram:
        return
    if imputations >= max(burn, trace):
        most = max(int(settings.nimps * (ram - burn - trace) / imputations), 0)
        raise config.error("NIMPS", f"{settings.nimps} imputed data sets of {n} rows and {v} columns "
                           f"need about {_size(total)} of memory (8 bytes a value, and the draws kept "
                           f"while sampling), more than this machine's {_size(ram)}; expected at "
                           f"most about {most} imputations")
    command = "BURN" if burn >= trace else ("ITERATIONS" if not settings.nimps else "NIMPS")
    which = "burn-in" if command == "BURN" else "later"
    raise config.error(command, f"the sampler keeps a trace of every {which} iteration "
                       f"({settings.chains} chains x {width} values a sweep, 4 bytes "
                       f"each): about {_size(total)} in all, more than this machine's "
                       f"{_size(ram)} of memory; expected fewer iterations")


# The likely cause of non-finite draws, by the group of the parameter that went first.
LIKELY_CAUSE = {
    "fixed": "its predictors are (nearly) collinear once imputed, or a predictor holds extreme values",
    "errvar": "its outcome is (nearly) a function of its predictors, so no residual variance is left",
    "ranvar": "a random-effect variance collapsed or exploded: too few clusters, or too little "
              "variation between them, for the random effects of that model",
    "threshold": "an ordinal category is (nearly) empty or perfectly predicted",
}


def _check_finite(spec: ModelSpec, raw: RawDraws, labels, source: str) -> None:
    """Stop, writing nothing, if the sampler produced NaN or infinite draws (a numerically
    singular block that the checks before sampling could not see, e.g. an imputed predictor that
    comes to duplicate another). Name the block and the parameter that went wrong first (the
    earliest saved draw with a non-finite value; the first such parameter of that draw), and
    the likely cause for that kind of parameter."""
    params = np.concatenate([raw.saved_params.reshape(-1, raw.saved_params.shape[-1]),
                             raw.post_trace.reshape(-1, raw.post_trace.shape[-1])])
    # rows run save by save (data set and chain inner), so the first bad row is the earliest
    bad_rows = ~np.isfinite(params).all(axis=1)
    if bad_rows.any() or not np.isfinite(raw.imputations).all():
        where, block, cause = "", None, LIKELY_CAUSE["fixed"]
        if bad_rows.any():
            first = int(np.flatnonzero(~np.isfinite(params[int(np.flatnonzero(bad_rows)[0])]))[0])
            block, group, term = labels[first]
            where = f" (first in the model of '{block}': {GROUP_TITLES[group].lower()} '{term}')"
            cause = LIKELY_CAUSE[group]
        random = any(g == "ranvar" for b, g, _ in labels if block is None or b == block)
        if spec.prior.name == "prior3" and random:
            raise ModelError(f"{source}: the sampler produced non-finite "
                             f"draws{where}: {PRIOR3_FAILURE}; expected prior2 (the default, flat) "
                             "or prior1 for this model. No file was written")
        raise ModelError(f"{source}: the sampler produced non-finite draws{where}; likely cause: "
                         f"{cause}; expected a model whose predictors are not (nearly) collinear "
                         "and whose variables vary: check that block's variables. No file was "
                         "written")



