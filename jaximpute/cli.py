"""The command line: `jaximpute run SCRIPT` (or just `jaximpute SCRIPT`).

Errors caused by input (script, data, model, output) print one line, `jaximpute: error: ...`,
and exit with status 2; nothing is written. Ctrl-C (SIGINT) and SIGTERM stop every subcommand
within moments, at any stage, with one line (`jaximpute: interrupted (SIGINT); nothing was
written`) and status 130 or 143, leaving no partial or temporary file (jaximpute.interrupt); an
interrupted `simulate` keeps its finished batches and resumes when rerun.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from . import __version__, interrupt
from .errors import JaxImputeError, OutputError


class UsageError(JaxImputeError):
    """A command line that argparse cannot read (an unknown option, a missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line, `jaximpute: error: ...` like every other error,
    raised for main() to print (argparse prints the usage too, and exits itself)."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.removeprefix("jaximpute").strip()     # 'run', or '' at the top
        raise UsageError(f"{command + ': ' if command else ''}{message}; see '{self.prog} --help'")


def _number(text: str) -> float:
    """--missing: a finite number (a missing code of nan or inf would match nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected e.g. -99") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; expected e.g. -99")
    return value


def _positive(text: str) -> float:
    """--df-com: complete-data degrees of freedom, a positive number."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number; expected the "
                                         "complete-data degrees of freedom, e.g. 100")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaximpute", description=(
        "Multilevel multiple imputation from Blimp-style scripts, compiled with JAX."))
    p.add_argument("--version", action="version", version=f"jaximpute {__version__}")
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="run an imputation script (.imp)")
    r.add_argument("script", help="the imputation script")
    r.add_argument("--no-progress", action="store_true", help="do not show sampling progress")
    r.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    r.add_argument("--outfile", help="write here instead of the script's OUTFILE")
    r.add_argument("--platform", choices=["cpu", "gpu", "tpu"],
                   help="JAX platform (default: JAX's choice, a GPU when one is installed)")
    a = sub.add_parser("analyze", help="fit a mixed model to imputed data sets and pool (Rubin's rules)")
    a.add_argument("file", help="a stacked file, an Mplus list file of separate files, or one separate file")
    a.add_argument("--formula", required=True,
                   help="lme4-style formula, e.g. 'y ~ x + w + x:w + (x|cluster)'")
    names = a.add_mutually_exclusive_group()
    names.add_argument("--names", help="column names after the imputation column (as VARIABLES), "
                                       "quoted: 'cluster y x'")
    names.add_argument("--script", help="take the names from this script's VARIABLES")
    a.add_argument("--missing", type=_number, help="missing-value code in the files")
    a.add_argument("--reml", action="store_true", help="REML instead of maximum likelihood")
    a.add_argument("--df-com", type=_positive,
                   help="complete-data df (Barnard & Rubin small-sample df)")
    a.add_argument("--output", help="write the pooled table as CSV (term, estimate, std_error, t, "
                                    "df, p, riv, fmi)")
    s = sub.add_parser("simulate", help="run a simulation study from a TOML config (configs/sim_slope.toml)")
    s.add_argument("config", help="the study's TOML config")
    s.add_argument("--out", help="results folder (default: CONFIG's name + '-results' here); "
                                 "rerunning into it resumes the study")
    s.add_argument("--shard", default="0/1", help="run only batches k, k+n, k+2n, ... (k/n, for job "
                                                  "arrays; then `jaximpute merge`)")
    s.add_argument("--memory", action="store_true",
                   help="print each imputation program's device memory for the config's batch and "
                        "the largest batch that fits, then exit (compiles, does not run)")
    s.add_argument("--distributed", action="store_true",
                   help="one process per host under jax.distributed (SLURM, Open MPI detected): "
                        "process k of n runs shard k/n, the last to finish writes the summary")
    s.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    m = sub.add_parser("merge", help="combine the folders of a sharded study and write its summary")
    m.add_argument("config", help="the study's TOML config")
    m.add_argument("folders", nargs="+", help="the shards' results folders")
    m.add_argument("--out", required=True, help="folder for reps.csv and summary.csv")
    for q in (s, m):
        q.add_argument("--parquet", action="store_true", help="also write reps.parquet and "
                                                              "summary.parquet (needs pyarrow)")
        q.add_argument("--no-plots", action="store_true", help="do not draw bias.png and coverage.png")
    return p


def _file_in_path(path: Path) -> Path | None:
    """The first of `path`'s folders, from the top, that is a file, not a folder (data.csv in
    data.csv/out.csv), or None."""
    for p in reversed(path.parents):
        if p.exists() and not p.is_dir():
            return p
    return None


def _check_output_file(path: Path, head: str, example: str = "imps.csv") -> None:
    """A file can be written at `path` (its folder exists, is a folder and is writable, and
    `path` is no folder); `head` starts the message ('OUTFILE: ', '--output: ')."""
    blocker = _file_in_path(path)
    if blocker is not None:
        raise OutputError(f"{head}'{path}': '{blocker}' is a file, not a folder; expected the "
                          "output in an existing folder")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{head}folder '{folder}' does not exist; expected an existing folder")
    if path.is_dir():
        raise OutputError(f"{head}'{path}' is a folder; expected a file name such as "
                          f"'{path / example}'")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{head}folder '{folder}' is not writable")


def _check_output_folder(path: Path, head: str, expected: str) -> None:
    """A results folder can be made (or reused) at `path`: no file stands in its way."""
    blocker = path if path.exists() and not path.is_dir() else _file_in_path(path)
    if blocker == path:
        raise OutputError(f"{head}'{path}' is a file, not a folder; expected {expected}")
    if blocker is not None:
        raise OutputError(f"{head}'{path}': '{blocker}' is a file, not a folder; expected {expected}")


def _check_outfile(script, outfile: Path | None, flag: bool = False) -> None:
    """Fail before sampling, not after, when the output cannot be written (`flag`: the path
    came from --outfile, not the script's OUTFILE)."""
    if outfile is None:
        return
    head = "--outfile: " if flag else "OUTFILE: "
    _check_output_file(outfile, head)
    if script.output_format == "separate" and "*" not in outfile.name:
        raise OutputError(f"{head}'{outfile}' has no '*' for the imputation number; "
                          "expected e.g. imp*.csv with OPTIONS: separate")
    for p in (script.data, script.path):
        if p is not None and outfile.resolve() == Path(p).resolve():
            raise OutputError(f"{head}'{outfile}' is an input file; refusing to overwrite it")


def _enable_compilation_cache() -> None:
    """Keep compiled programs between runs (same model shape: no recompile); JAXIMPUTE_CACHE=0
    turns it off, JAXIMPUTE_CACHE=DIR moves it."""
    where = os.environ.get("JAXIMPUTE_CACHE", "")
    if where == "0":
        return
    import jax
    path = Path(where) if where else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaximpute" / "xla"
    try:
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except OSError:
        pass  # a read-only home: run without the cache


def _summarise_paths(paths: list[str]) -> list[str]:
    if len(paths) <= 4:
        return paths
    return [paths[0], f"... ({len(paths) - 2} more)", paths[-1]]


def _written() -> str:
    """The stop line's account of the files put in place (interrupt.on_stop)."""
    out = sys.modules.get("jaximpute.output")
    paths = [str(p) for p in out.written()] if out is not None else []
    if not paths:
        return "nothing was written"
    return ", ".join(_summarise_paths(paths)) + " had been written whole before the stop"


def cmd_run(args) -> int:
    from .api import run as run_model
    from .data import read_table
    from .script import read_script

    script = read_script(args.script)
    outfile = Path(args.outfile) if args.outfile else script.outfile
    script.check_runnable(writes=True, outfile=outfile)
    _check_outfile(script, outfile, flag=bool(args.outfile))
    assert script.data is not None
    table = read_table(script.data, [n.text for n in script.variables] if script.variables else None,
                       script.missing)
    _enable_compilation_cache()
    result = run_model(script, table, progress=not (args.no_progress or args.quiet))
    if script.nimps:
        assert outfile is not None                      # check_runnable
        t = time.perf_counter()
        paths = result.write(outfile)
        result.report.timing["writing"] = time.perf_counter() - t
        result.report.outputs = _summarise_paths([str(p) for p in paths])
        if script.output_format == "separate":
            result.report.outputs.append(str(outfile.with_name(outfile.name.replace("*", "list")))
                                         + "  (list file)")
    if not args.quiet:
        print(result.report.text)
    return 0


def cmd_analyze(args) -> int:
    from .analyze import analyze, read_imputations
    from .script import read_script

    names, origin = None, "--names"            # no names given: a header row must name them
    if args.names:
        names, origin = args.names.replace(",", " ").split(), "--names"
    elif args.script:
        origin = f"the VARIABLES of {args.script}"
        sc = read_script(args.script)
        if not sc.variables:
            raise sc.error("VARIABLES", "required to name the columns; expected VARIABLES: ...;")
        names = [n.text for n in sc.variables]
    if args.output:
        out = Path(args.output)
        _check_output_file(out, "--output: ", "pooled.csv")
        if out.resolve() == Path(args.file).resolve():
            raise OutputError(f"--output: '{out}' is the input file; refusing to overwrite it")
    frames = read_imputations(args.file, names, missing_code=args.missing, names_origin=origin)
    if len(frames) < 2:
        raise UsageError(f"{args.file}: holds {len(frames)} imputed data set; pooling needs at least "
                         "2 imputed data sets (a stacked file's imputations 1, 2, ..., or a list "
                         "file of separate files)")
    _enable_compilation_cache()
    result = analyze(frames, args.formula, reml=args.reml, df_com=args.df_com)
    print(result.text)
    if args.output:
        result.to_csv(args.output)
        print(f"\npooled table written to {args.output}")
    return 0


def _study_out(args) -> Path:
    return Path(args.out) if args.out else Path(Path(args.config).stem + "-results")


def cmd_simulate(args) -> int:
    from .studies import runner as S
    from .studies.config import load_study
    from .studies.pages import memory_text, summary_text

    st = load_study(args.config)
    shard = S.parse_shard(args.shard)
    out = _study_out(args)
    log = (lambda msg: None) if args.quiet else S.log_stderr
    if args.memory:
        print(memory_text(S.memory_plan(st, log=log)))
        return 0
    _check_output_folder(out, "--out: " if args.out else "results folder: ",
                         "a folder for the study's results (a new one, or this study's to resume)")
    if args.distributed:
        import jax
        try:
            jax.distributed.initialize()  # coordinator, process count and id from the scheduler
        except (ValueError, RuntimeError) as e:
            raise UsageError(f"--distributed: jax.distributed could not start ({str(e).strip()}); "
                             "expected one process per host of a job under a scheduler it detects "
                             "(SLURM, Open MPI), or run without --distributed") from None
        shard = (jax.process_index(), jax.process_count())
    interrupt.on_stop(lambda: S.stopped(st, out, shard))
    _enable_compilation_cache()
    S.run_study(st, out, shard=shard, log=log, bar=not args.quiet and sys.stderr.isatty())
    missing = S.pending_units(st, out)
    if missing:
        if not args.quiet:
            print(f"{out}: {len(st.units()) - len(missing)} of {len(st.units())} batches done; run the "
                  f"other shards, then `jaximpute merge {args.config} FOLDERS... --out DIR`")
        return 0
    summ = S.write_summary(st, [out], out, parquet=args.parquet, plots=not args.no_plots)
    if not args.quiet:
        print(summary_text(summ))
        print(f"\nresults in {out}: summary.csv, reps.csv" + ("" if args.no_plots else
                                                            ", bias.png, coverage.png"))
    return 0


def cmd_merge(args) -> int:
    from .studies.config import load_study
    from .studies.pages import summary_text
    from .studies.runner import write_summary

    st = load_study(args.config)
    _check_output_folder(Path(args.out), "--out: ", "a folder for the merged results")
    interrupt.on_stop(lambda: _written() + ("" if _written() == "nothing was written" else
                                            "; run the same command again for the rest"))
    summ = write_summary(st, args.folders, args.out, parquet=args.parquet, plots=not args.no_plots)
    print(summary_text(summ))
    print(f"\nresults in {args.out}: summary.csv, reps.csv" + ("" if args.no_plots else
                                                                ", bias.png, coverage.png"))
    return 0


def main(argv=None, *, stop_on_signal: bool | None = None) -> int:
    """The command line. As a program (`jaximpute ...`, `python -m jaximpute.cli`: no `argv`),
    Ctrl-C and SIGTERM stop it at once (jaximpute.interrupt); called with `argv` from Python
    (tests, notebooks), a KeyboardInterrupt comes when the running program returns, as in the
    library. `stop_on_signal` chooses either way."""
    if stop_on_signal is None:
        stop_on_signal = argv is None
    if stop_on_signal:
        interrupt.on_stop(_written)
        return interrupt.run_stoppable(lambda: _main(argv))
    return _main(argv)


def _main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("run", "analyze", "simulate", "merge", "-h", "--help", "--version") \
            and not argv[0].startswith("-"):
        argv = ["run"] + argv     # `jaximpute script.imp` is `jaximpute run script.imp`
    try:
        args = _parser().parse_args(argv)
    except UsageError as e:
        print(f"jaximpute: error: {e}", file=sys.stderr)
        return e.exit_code
    if args.command is None:
        _parser().print_help()
        return 2
    if getattr(args, "platform", None):
        os.environ["JAX_PLATFORMS"] = args.platform
    try:
        return {"run": cmd_run, "analyze": cmd_analyze, "simulate": cmd_simulate,
                "merge": cmd_merge}[args.command](args)
    except JaxImputeError as e:
        print(f"jaximpute: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("\njaximpute: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
