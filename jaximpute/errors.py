"""User-facing errors.

Every problem a user can cause (a malformed script, a bad data file, a model we cannot fit) is
raised as a subclass of `JaxImputeError`. The command line prints its message as one line and
exits non-zero, without a traceback; the Python API lets it propagate.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class JaxImputeError(Exception):
    """An error caused by user input; its message is complete and names where the problem is."""

    exit_code = 2


class ScriptError(JaxImputeError):
    """The imputation script is malformed (file, line, column and command are in the message)."""


class DataError(JaxImputeError):
    """The data file or DataFrame does not match what the script says (row and column named)."""


class ModelError(JaxImputeError):
    """The model cannot be built or is not supported yet."""


class OutputError(JaxImputeError):
    """An output file cannot be written (or would overwrite an input)."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest candidate, or '' when none is close."""
    cands = list(candidates)
    lowered = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[hits[0]]}'?)" if hits else ""
