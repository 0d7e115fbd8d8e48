"""`--cpus N` pins a benchmark process to its first N allowed CPUs. Imported first by the
benchmark scripts, before JAX starts XLA's threads."""

import os
import sys


def pin_cpus_from_argv() -> None:
    if "--cpus" in sys.argv and hasattr(os, "sched_setaffinity"):
        n = int(sys.argv[sys.argv.index("--cpus") + 1])
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])


pin_cpus_from_argv()
