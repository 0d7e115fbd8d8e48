"""Parse and validate Blimp-style imputation scripts (the language of docs/design/script.md).

A script is a list of ``COMMAND: value;`` statements, for example::

    DATA: ~/desktop/examples/data.csv;
    VARNAMES: cluster y x;
    MISSING: -99;
    MODEL: cluster ~ y:x;
    OUTCOME: y;

Parsing runs in three small steps:

1. `_statements` cuts the text into statements. It blanks comments (keeping every character's
   offset, so any token maps back to a line and column) and catches what breaks the statement
   structure itself: a missing ':' or ';', an unknown command, an unterminated quote.
2. `_Reader.take` reads each statement's value on its own: integers, names, paths, options and the
   MODEL grammar.
3. `_Reader.cross_check` checks what needs several statements of a script (the output format
   against OUTFILE, CLUSTERID against MODEL's ids); the reader builds the `Config`
   (jaximpute.config), whose own checks (`config.problems`: names against VARIABLES, OUTCOME
   against MODEL, ...) are the same for every front end.

Every problem is collected with its position and only the one earliest in the file is raised, as a
single `ScriptError`, so a user fixes a script top-down as they would a compiler's errors. Messages
have one shape, which the command line and the tests rely on::

    {file}:{line}:{col}: {COMMAND}: {what was wrong}; expected {what was expected}

Names are matched case-insensitively. When VARIABLES is given, every name is checked against it
and stored in its VARIABLES spelling; without VARIABLES (names come from the data file's header)
the name checks are left to the caller, which can point at `Name.pos` through `Config.error`.
"""

from __future__ import annotations

import bisect
import os
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, TypedDict

from jaximpute.config import (ALIASES, COMMANDS, Config, ModelTerm, Name, Origin, Pos, Problem,
                              canonical, problems, raise_first)
from jaximpute.dialect import BLIMP2, BLIMP34, BLIMP34_COMMANDS, Ambiguous, Dialect, decide
from jaximpute.errors import ScriptError, did_you_mean
from jaximpute.kernels.structure import PRIORS

__all__ = ["Pos", "Name", "ModelTerm", "Config", "parse_script", "read_script", "parse_model"]


# --------------------------------------------------------------------------------------------
# The language's vocabulary
# --------------------------------------------------------------------------------------------

# Canonical command names in the order the "expected one of" list shows them.
_ALL_COMMAND_WORDS = COMMANDS + tuple(ALIASES)
_REPEATABLE = {"SAVE"}  # one `name = value` pair per statement, so several are normal

OPTION_WORDS = (
    "stacked", "separate", "sep", "stacked0", "psr", "nopsr", "estimates",
    "prior1", "prior2", "prior3", "header", "latent",
)
_FORMAT_OF_OPTION = {"stacked": "stacked", "stacked0": "stacked", "separate": "separate",
                     "sep": "separate"}
_PRIORS = PRIORS
_SAVE_KEYS = ("stacked", "separate")

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VALID_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_MAX_RANGE = 10_000  # a1-a100000000 is a typo, not a data set


def _format(source: str, pos: Pos | None, command: str | None, message: str) -> str:
    where = f"{source}:{pos.line}:{pos.col}" if pos is not None else source
    return f"{where}: {command + ': ' if command else ''}{message}"


# --------------------------------------------------------------------------------------------
# Problems: collected with their position, the earliest one is raised
# --------------------------------------------------------------------------------------------


def _show(text: str, limit: int = 40) -> str:
    """Quote user text for a message, shortened and on one line."""
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# --------------------------------------------------------------------------------------------
# Step 1: text -> statements
# --------------------------------------------------------------------------------------------


class _Source:
    """The script text with a table that maps character offsets to line and column."""

    def __init__(self, text: str, label: str):
        # Normalise line ends first: columns do not change, and '\r' never needs a special case.
        self.text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.label = label
        self._line_starts = [0] + [i + 1 for i, c in enumerate(self.text) if c == "\n"]

    def pos(self, offset: int) -> Pos:
        line = bisect.bisect_right(self._line_starts, offset)
        return Pos(line, offset - self._line_starts[line - 1] + 1)


@dataclass
class _Statement:
    """One `COMMAND: value;` statement.

    `value` is the text between ':' and ';' with comments replaced by spaces, so that an index into
    it plus `start` is an offset into the source. `masked` also blanks the inside of quotes; it is
    used to look at the statement's shape (is another command hiding in it?) without being fooled
    by a file name.
    """

    word: str  # the command as written, upper-cased: the name used in messages
    command: str  # canonical
    pos: Pos  # of the command keyword
    start: int  # source offset of value[0]
    value: str
    masked: str
    src: _Source

    def at(self, index: int) -> Pos:
        """Position of value[index]."""
        return self.src.pos(self.start + index)

    def problem(self, index: int | None, what: str, expected: str) -> Problem:
        """A problem at value[index], or at the command keyword when index is None."""
        pos = self.pos if index is None else self.at(index)
        return Problem(pos, self.word, what, expected)


def _skip_blank(text: str, i: int) -> int:
    """Skip whitespace, ';' (empty statements) and comments."""
    while i < len(text):
        if text[i].isspace() or text[i] == ";":
            i += 1
        elif text[i] == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        else:
            break
    return i


def _statements(src: _Source, blimp34: bool = False) -> Iterator[_Statement]:
    """Yield the statements in file order; raise Problem where the structure breaks. In Blimp
    3/4's language its own command words are known too (ITER; the rest are refused as not
    supported yet by the reader)."""
    text, i, first, previous = src.text, 0, True, ""
    while (i := _skip_blank(text, i)) < len(text):
        if blimp34 and previous == "MODEL":
            m = _WORD.match(text, i)
            word = m.group() if m else ""
            if canonical(word) is None and word.upper() not in BLIMP34_COMMANDS:
                raise Problem(src.pos(i), "MODEL", "a second equation or a block label in MODEL: "
                              "several equations are not supported yet", _SUPPORTED_34)
        word, command, colon = _command_word(src, i, first, blimp34)
        previous = command
        start = colon + 1
        value, masked, end = _scan_value(src, start, word)
        st = _Statement(word, command, src.pos(i), start, value, masked, src)
        _check_run_on(st)
        yield st
        i, first = end + 1, False


def _command_word(src: _Source, i: int, first: bool, blimp34: bool = False) -> tuple[str, str, int]:
    """Read `COMMAND:` at offset i. Returns the word upper-cased, its canonical command and the
    offset of the ':'."""
    text = src.text
    m = _WORD.match(text, i)
    j = m.end() if m else i
    while j < len(text) and text[j] in " \t":
        j += 1
    has_colon = j < len(text) and text[j] == ":"
    word = m.group() if m else ""
    command = canonical(word)
    if command is None and blimp34 and word.upper() in BLIMP34_COMMANDS:
        command = "ITERATIONS" if word.upper() == "ITER" else word.upper()
    if command is None and not has_colon and not (m and did_you_mean(word, _ALL_COMMAND_WORDS)):
        # Not even shaped like a command: most often the rest of the previous statement, cut off
        # by a stray ';'.
        line_end = text.find("\n", i)
        hint = "" if first else " (is there a ';' too many before it?)"
        raise Problem(src.pos(i), None,
                       f"unexpected {_show(text[i:line_end if line_end >= 0 else None])} "
                       f"where a command should start{hint}",
                       "a statement such as 'MODEL: cluster ~ y x;'")
    if command is None:
        raise Problem(src.pos(i), None,
                       f"unknown command {word!r}{did_you_mean(word, _ALL_COMMAND_WORDS)}",
                       "one of " + ", ".join(COMMANDS))
    if not has_colon:
        rest = text[j:].split("\n", 1)[0]
        found = _show(rest) if rest.strip() else "the end of the line"
        raise Problem(src.pos(j), word.upper(), f"no ':' after the command name (found {found})",
                       f"'{word.upper()}: value;'")
    return word.upper(), command, j


def _scan_value(src: _Source, start: int, word: str) -> tuple[str, str, int]:
    """Read a value from `start` to its ';' (or the end of the file, which may stand for the last
    ';'). Returns (value, masked, offset of the ';')."""
    text, value, masked, i = src.text, [], [], start
    while i < len(text) and text[i] != ";":
        c = text[i]
        if c == "#":  # a comment: blank it up to the newline
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            value.append(" " * (end - i))
            masked.append(" " * (end - i))
            i = end
        elif c in "\"'":  # a quote must close on its line, so an unclosed one is caught here
            close = text.find(c, i + 1)
            newline = text.find("\n", i + 1)
            if close < 0 or (0 <= newline < close):
                rest = text[i:newline] if newline >= 0 else text[i:]
                raise Problem(src.pos(i), word, f"unterminated quote {c} in {_show(rest)}",
                               f"a closing {c} on the same line")
            value.append(text[i:close + 1])
            masked.append(c + " " * (close - i - 1) + c)
            i = close + 1
        else:
            value.append(c)
            masked.append(c)
            i += 1
    return "".join(value), "".join(masked), i


# A word followed by ':' that is not itself part of a name or a `y:x` term.
_LABEL = re.compile(r"(?<![A-Za-z0-9_.:])([A-Za-z_][A-Za-z0-9_.]*)[ \t]*:")


def _check_run_on(st: _Statement) -> None:
    """Catch a missing ';': the next statement then hides in this one's value (`BURN: 100` newline
    `THIN: 10;` reads as BURN = '100 THIN: 10'). Report it where the ';' belongs.

    A known command followed by ':' gives it away. So does any `word:` starting a continuation
    line, except in MODEL, where `y:x` may start a line; there the word must look like a command
    and be followed by a space, as statements are written and slopes are not.
    """
    text = st.masked
    for m in _LABEL.finditer(text):
        word = m.group(1)
        before = text[: m.start()]
        at_line_start = "\n" in before and before.rstrip(" \t").endswith("\n") and before.strip() != ""
        known = canonical(word) is not None
        if st.command == "MODEL":
            spaced = m.end() == len(text) or text[m.end()].isspace()
            looks_like_command = known or (at_line_start and did_you_mean(word, _ALL_COMMAND_WORDS))
            run_on = spaced and bool(looks_like_command)
        else:
            run_on = known or at_line_start
        if run_on:
            where = len(before.rstrip())
            raise st.problem(where, f"the value runs into {word + ':'!r} on line {st.at(m.start()).line}, "
                                    "so a ';' is probably missing",
                             "';' at the end of each statement")


# --------------------------------------------------------------------------------------------
# Step 2: read each statement's value
# --------------------------------------------------------------------------------------------

_INT_EXAMPLES = {"SEED": 90291, "BURN": 1000, "THIN": 10, "NIMPS": 20, "ITERATIONS": 1000,
                 "CHAINS": 2}


def _words(st: _Statement) -> list[tuple[str, int]]:
    """The value's whitespace- or comma-separated words, with their indexes in the value."""
    return [(m.group(), m.start()) for m in re.finditer(r"[^\s,]+", st.value)]


def _read_int(st: _Statement, word: tuple[str, int] | None, minimum: int, what: str,
              example: int) -> int:
    """One integer >= minimum (and < 2**63, so it fits a seed or a counter)."""
    if minimum == 0:
        expected = f"a non-negative integer such as {example}"
    else:
        expected = f"an integer of at least {minimum} such as {example}"
    if word is None:
        raise st.problem(None, f"no {what} given", expected)
    text, index = word
    if not _INTEGER.fullmatch(text):
        raise st.problem(index, f"{text!r} is not a whole number", expected)
    value = int(text)
    if value < minimum:
        raise st.problem(index, f"{text} is {'negative' if value < 0 else 'too small'}", expected)
    if value >= 2**63:
        raise st.problem(index, f"{text} is too large", f"{expected}, below 2**63")
    return value


def _one_word(st: _Statement, what: str, expected: str) -> tuple[str, int] | None:
    words = _words(st)
    if len(words) > 1:
        raise st.problem(words[1][1], f"more than one {what} ({_show(st.value.strip())})", expected)
    return words[0] if words else None


def _read_single_int(st: _Statement, minimum: int = 0) -> int:
    example = _INT_EXAMPLES[st.command]
    word = _one_word(st, "value", f"one integer such as {example}")
    return _read_int(st, word, minimum, "value", example)


def _read_number(st: _Statement) -> float | None:
    """MISSING's code; NA (Blimp 4's spelling for data whose missing cells are empty or NA, which
    are missing anyway) reads as no code."""
    expected = "one number such as -99, or NA"
    word = _one_word(st, "value", f"{expected} (one missing-value code for all variables)")
    if word is None:
        raise st.problem(None, "no value given", expected)
    text, index = word
    if text.upper() == "NA":
        return None
    if not _NUMBER.fullmatch(text):
        raise st.problem(index, f"{text!r} is not a number", expected)
    return float(text)


_NAMES_EXPECTED = "names made of letters, digits, '_' and '.', not starting with a digit"


def _tokens(st: _Statement, pattern: str) -> list[tuple[str, int]]:
    """Tokens matching `pattern`, skipping whitespace and commas, with their value indexes."""
    return [(m.group(), m.start()) for m in re.finditer(pattern, st.value)]


def _check_name(st: _Statement, token: tuple[str, int]) -> Name:
    text, index = token
    if not _VALID_NAME.fullmatch(text):
        if re.fullmatch(r"[A-Za-z0-9_.]+", text):
            raise st.problem(index, f"{text!r} is not a valid name (it starts with a digit)",
                             _NAMES_EXPECTED)
        raise st.problem(index, f"unexpected {_show(text)}", _NAMES_EXPECTED)
    return Name(text, st.at(index))


def _read_names(st: _Statement, ranges: bool = True) -> list[Name]:
    """Names separated by whitespace or commas; with `ranges`, a1-a4 expands to a1 a2 a3 a4."""
    tokens = _tokens(st, r"[A-Za-z0-9_.]+|-|[^\sA-Za-z0-9_.,-]+")
    names: list[Name] = []
    i = 0
    while i < len(tokens):
        if tokens[i][0] == "-":
            raise st.problem(tokens[i][1], "'-' without a name before it",
                             "a range written like a1-a4")
        first = _check_name(st, tokens[i])
        if i + 1 < len(tokens) and tokens[i + 1][0] == "-":
            if not ranges:
                raise st.problem(tokens[i + 1][1], "a range is not allowed here", _NAMES_EXPECTED)
            if i + 2 >= len(tokens) or tokens[i + 2][0] == "-":
                raise st.problem(tokens[i + 1][1], f"the range {first.text + '-'!r} has no end",
                                 "a range written like a1-a4")
            last = _check_name(st, tokens[i + 2])
            names.extend(_expand_range(st, first, last, tokens[i][1]))
            i += 3
        else:
            names.append(first)
            i += 1
    return names


def _expand_range(st: _Statement, first: Name, last: Name, index: int) -> list[Name]:
    """a1-a4 -> a1 a2 a3 a4 (a01-a10 keeps the zero padding); every name gets the range's position."""
    expected = "a range written like a1-a4: one prefix, numbers counting up"
    a = re.fullmatch(r"(.*?)(\d+)", first.text)
    b = re.fullmatch(r"(.*?)(\d+)", last.text)
    shown = f"{first.text}-{last.text}"
    if not a or not b or a.group(1).lower() != b.group(1).lower() or not a.group(1):
        raise st.problem(index, f"{shown!r} is not a range", expected)
    lo, hi = int(a.group(2)), int(b.group(2))
    if lo > hi:
        raise st.problem(index, f"{shown!r} counts down", expected)
    if hi - lo >= _MAX_RANGE:
        raise st.problem(index, f"{shown!r} names {hi - lo + 1} variables",
                         f"a range of fewer than {_MAX_RANGE}")
    digits = a.group(2)
    width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
    return [Name(f"{a.group(1)}{k:0{width}d}", first.pos) for k in range(lo, hi + 1)]


def _check_unique(st: _Statement, names: list[Name], what: str) -> None:
    seen: dict[str, Name] = {}
    for name in names:
        other = seen.setdefault(name.text.lower(), name)
        if other is not name:
            same = "" if other.text == name.text else f" (names are case-insensitive: {other.text!r})"
            raise Problem(name.pos, st.word, f"{name.text!r} is listed twice, at line {other.pos.line} "
                                              f"column {other.pos.col} and here{same}",
                           f"each {what} once")


def _read_path(st: _Statement, index: int = 0) -> tuple[str, int]:
    """A file name: the whole of value[index:], stripped, optional quotes removed.
    Returns the raw text and its index in the value."""
    text = st.value[index:]
    lead = len(text) - len(text.lstrip())
    raw = text.strip()
    index += lead
    expected = "a file name such as data.csv (quote it if it has a ';' or '#')"
    if not raw:
        raise st.problem(None, "no file name given", expected)
    if raw[0] in "\"'":
        close = raw.index(raw[0], 1)  # _scan_value made sure the quote closes
        if close != len(raw) - 1:
            after = raw[close + 1:]
            where = index + close + 1 + len(after) - len(after.lstrip())
            raise st.problem(where, f"unexpected {_show(after)} after the quoted file name",
                             "';' after the file name")
        raw, index = raw[1:-1], index + 1
        if not raw.strip():
            raise st.problem(index - 1, "the quoted file name is empty", expected)
        return raw, index
    if "\n" in raw:  # unquoted names never span lines: the next statement has run into this one
        first_line = raw.split("\n")[0].rstrip()
        rest = raw[raw.index("\n"):].strip()
        raise st.problem(index + len(first_line),
                         f"the file name runs on to line {st.at(index + raw.index(rest)).line} "
                         f"({_show(rest)}), so a ';' is probably missing", "';' after the file name")
    return raw, index


# --------------------------------------------------------------------------------------------
# MODEL: [id1 [id2]] ~ term term ...   with term = name | name:name | name*name[*name...]
# --------------------------------------------------------------------------------------------

_MODEL_EXPECTED = "'cluster ~ y x', with terms such as y, y:x (random slope) or a*b (product)"


# Blimp 3/4's MODEL: what jaximpute reads of it so far, and what it names as not supported yet.
_SUPPORTED_34 = ("one equation 'y ~ x w x*w | x' (random effects after '|', CLUSTERID for the "
                 "clusters) or 'intercept -> y x w' (a joint model of y, x and w)")
_UNSUPPORTED_34 = (
    (r"~~|<->", "covariances ('~~', '<->')"),
    (r"@", "labels and fixed values ('@')"),
    (r"[{}]", "'{ ... }' (several outcomes, loops)"),
    (r"[()]", "expressions in parentheses"),
    (r"\^", "powers ('^')"),
    (r"\[", "random effects placed at a level ('x[id]')"),
    (r"\b[A-Za-z_][A-Za-z0-9_]*\.(mean|latent|lag|missing)\b", "'.mean', '.latent', '.lag' and "
     "'.missing' terms"),
    (r"(?<![A-Za-z0-9_.]):(?![A-Za-z0-9_.])|[A-Za-z0-9_.]:[A-Za-z0-9_.]", "ranges of names ('a1:a9') and labels "
     "('focal.model:')"),
)


@dataclass(frozen=True)
class _Model34:
    outcome: Name | None
    terms: tuple[ModelTerm, ...]
    pos: Pos


def _is_intercept(text: str) -> bool:
    return text.lower() in ("intercept", "1")


def _read_model34(st: _Statement) -> _Model34:
    """One equation of Blimp 3/4's MODEL as the configuration's terms: `y ~ x w x*w | x` is the
    outcome y with the terms y:x (a random slope, which carries x's fixed effect), w and x*w;
    the intercept is always in, and with CLUSTERID a random intercept too (as Blimp does), so
    'intercept' and '1' add nothing; `intercept -> y x w` is the joint model of y, x and w.
    Everything else of the language is named as not supported yet."""
    value = st.masked
    if not value.strip():
        raise st.problem(None, "the model is empty", _SUPPORTED_34)
    for pattern, what in _UNSUPPORTED_34:
        m = re.search(pattern, value)
        if m:
            raise st.problem(m.start(), f"{what} are not supported yet", _SUPPORTED_34)
    arrow = re.search(r"->|\u2013>", value)
    if arrow:
        left = _tokens(st, r"\S+")
        lhs = [t for t in left if t[1] < arrow.start()]
        if len(lhs) != 1 or not _is_intercept(lhs[0][0]):
            raise st.problem(lhs[0][1] if lhs else arrow.start(),
                             "'->' with indicators (latent variables) is not supported yet",
                             _SUPPORTED_34)
        names = [_check_name(st, t) for t in left if t[1] > arrow.start()]
        if not names:
            raise st.problem(arrow.start(), "no variables after '->'", "'intercept -> y x w'")
        _check_unique(st, names, "variable")
        return _Model34(None, tuple(ModelTerm("var", (n,), n.pos) for n in names), st.at(lhs[0][1]))
    tokens = _tokens(st, r"[A-Za-z0-9_.]+|[~|*]|\S")
    for text, index in tokens:
        if not re.fullmatch(r"[A-Za-z0-9_.]+|[~|*]", text):
            raise st.problem(index, f"unexpected {_show(text)}", _SUPPORTED_34)
    tildes = [t for t in tokens if t[0] == "~"]
    if not tildes:
        raise st.problem(tokens[0][1], "no '~'", _SUPPORTED_34)
    split = tokens.index(tildes[0])
    left, right = tokens[:split], tokens[split + 1:]
    if len(tildes) > 1:
        raise st.problem(tildes[1][1], "a second '~'", _SUPPORTED_34)
    if len(left) != 1:
        raise st.problem(left[1][1] if left else tildes[0][1],
                         "several outcomes on one left side are not supported yet" if left else
                         "no outcome left of '~'", _SUPPORTED_34)
    outcome = _check_name(st, left[0])
    bars = [t for t in right if t[0] == "|"]
    if len(bars) > 1:
        raise st.problem(bars[1][1], "a second '|'", "random effects after one '|', at the end")
    fixed = right[:right.index(bars[0])] if bars else right
    random = right[right.index(bars[0]) + 1:] if bars else []
    terms = _model_terms(st, [t for t in fixed if not _is_intercept(t[0])])
    slopes: list[Name] = []
    for text, index in random:
        if text == "*":
            raise st.problem(index, "a product among the random effects is not supported yet",
                             "names after '|'")
        if not _is_intercept(text):
            slopes.append(_check_name(st, (text, index)))
    _check_unique(st, slopes, "random effect")
    out: list[ModelTerm] = []
    slope_of = {n.text.lower(): n for n in slopes}
    for term in terms:
        name = term.names[0]
        if term.kind == "var" and name.text.lower() in slope_of:
            out.append(ModelTerm("slope", (outcome, name), term.pos))
            slope_of.pop(name.text.lower())
        elif term.kind == "var" and name.text.lower() == outcome.text.lower():
            raise Problem(term.pos, st.word, f"the outcome {name.text!r} is also a predictor",
                          "an outcome left of '~' only")
        else:
            out.append(term)
    out += [ModelTerm("slope", (outcome, n), n.pos) for n in slope_of.values()]
    if not any(t.kind == "slope" for t in out):
        out.insert(0, ModelTerm("var", (outcome,), outcome.pos))
    return _Model34(outcome, tuple(out), st.at(left[0][1]))



@dataclass(frozen=True)
class _Model:
    ids: tuple[Name, ...]
    terms: tuple[ModelTerm, ...]
    pos: Pos


def _read_model(st: _Statement) -> _Model:
    tokens = _tokens(st, r"[A-Za-z0-9_.]+|[:*~]|[^\sA-Za-z0-9_.,:*~]+")
    if not tokens:
        raise st.problem(None, "the model is empty", _MODEL_EXPECTED)
    for text, index in tokens:
        if not re.fullmatch(r"[A-Za-z0-9_.]+|[:*~]", text):
            raise st.problem(index, f"unexpected {_show(text)}",
                             "variable names, ':' (random slope), '*' (product) and '~'")
    tildes = [t for t in tokens if t[0] == "~"]
    if len(tildes) > 1:
        raise st.problem(tildes[1][1], "a second '~'",
                         "one '~', with cluster ids on its left and terms on its right")
    left: list[tuple[str, int]] = []
    right = tokens
    if tildes:
        split = tokens.index(tildes[0])
        left, right = tokens[:split], tokens[split + 1:]
    ids = _model_ids(st, left)
    if not right:
        raise st.problem(tildes[0][1], "nothing right of '~'", "model terms such as 'y x' or 'y:x'")
    return _Model(tuple(ids), tuple(_model_terms(st, right)), st.at(tokens[0][1]))


def _model_ids(st: _Statement, left: list[tuple[str, int]]) -> list[Name]:
    for text, index in left:
        if text in ":*":
            raise st.problem(index, f"{text!r} left of '~'",
                             "only cluster ids left of '~', such as 'school student ~'")
    ids = [_check_name(st, t) for t in left]
    if len(ids) > 2:
        raise st.problem(left[2][1], f"{len(ids)} ids left of '~' ({_show(' '.join(t for t, _ in left))})",
                         "one cluster id, or two for three-level data")
    _check_unique(st, ids, "cluster id")
    return ids


def _model_terms(st: _Statement, tokens: list[tuple[str, int]]) -> list[ModelTerm]:
    terms: list[ModelTerm] = []
    seen: dict[tuple, ModelTerm] = {}
    i = 0
    while i < len(tokens):
        text, index = tokens[i]
        if text in ":*":
            raise st.problem(index, f"dangling {text!r} with no name before it", _MODEL_EXPECTED)
        names = [_check_name(st, tokens[i])]
        op = None
        i += 1
        while i < len(tokens) and tokens[i][0] in ":*":
            this_op, op_index = tokens[i]
            if i + 1 >= len(tokens) or tokens[i + 1][0] in ":*~":
                raise st.problem(op_index, f"dangling {this_op!r} after {names[-1].text!r}",
                                 f"a name after {this_op!r}, as in 'y:x' or 'a*b'")
            if op is not None and this_op != op:
                raise st.problem(op_index, "a term mixes ':' and '*'", "one kind per term: 'y:x' or 'a*b'")
            op = this_op
            names.append(_check_name(st, tokens[i + 1]))
            i += 2
        term = _make_term(st, names, op, index)
        key = (term.kind, tuple(sorted(n.text.lower() for n in names)) if op == "*"
               else tuple(n.text.lower() for n in names))
        if key in seen:
            raise st.problem(index, f"the term {term.text!r} is listed twice", "each term once")
        seen[key] = term
        terms.append(term)
    return terms


def _make_term(st: _Statement, names: list[Name], op: str | None, index: int) -> ModelTerm:
    shown = (op or "").join(n.text for n in names)
    if op == ":" and len(names) > 2:
        raise st.problem(index, f"{shown!r} has more than one ':'", "a random slope written 'y:x'")
    lowered = [n.text.lower() for n in names]
    if len(set(lowered)) < len(lowered):
        raise st.problem(index, f"{shown!r} names a variable twice", "distinct names in 'y:x' and 'a*b'")
    kind = {None: "var", ":": "slope", "*": "product"}[op]
    return ModelTerm(kind, tuple(names), st.at(index))


# --------------------------------------------------------------------------------------------
# Steps 2 and 3: the reader that holds what each statement said
# --------------------------------------------------------------------------------------------


@dataclass
class _Save:
    """One `SAVE: key = file;` statement."""

    fmt: str  # 'stacked' or 'separate'
    raw: str  # the file name as written
    key_pos: Pos
    path_pos: Pos


class _Values(TypedDict, total=False):
    """What each command's statement was read as (its reader's result), for the commands read
    cleanly; SAVE, which may repeat, is kept in `_Reader.saves`."""

    DATA: tuple[str, int]
    OUTFILE: tuple[str, Pos]
    VARIABLES: list[Name]
    ORDINAL: list[Name]
    NOMINAL: list[Name]
    FIXED: list[Name]
    LEVEL1VARIABLES: list[Name]
    CLUSTERID: list[Name]
    OUTCOME: Name
    MISSING: float | None
    MODEL: _Model | _Model34
    SEED: int
    BURN: int
    NIMPS: int
    ITERATIONS: int
    THIN: int
    CHAINS: tuple[int, int | None]
    OPTIONS: list[str]


class _Reader:
    """Reads statements one by one (step 2), then checks them together (step 3)."""

    def __init__(self, src: _Source, base: Path, dialect: Dialect | None = None):
        dialect = dialect or Dialect(BLIMP2, "")
        self.src, self.base, self.dialect = src, base, dialect
        self.blimp34 = dialect.name == BLIMP34
        self.commands: dict[str, Pos] = {}
        self.words: dict[str, str] = {}  # canonical -> the spelling used first (for messages)
        self.values: _Values = {}  # canonical command -> value, only for values read cleanly
        self.saves: list[_Save] = []
        self.option_pos: dict[str, Pos] = {}
        self.failed: set[str] = set()  # commands whose value could not be read

    # -- step 2 --------------------------------------------------------------------------------

    def take(self, st: _Statement) -> None:
        first = self.commands.get(st.command)
        if first is not None and st.command not in _REPEATABLE:
            also = "" if self.words[st.command] == st.word else f" (as {self.words[st.command]})"
            raise Problem(st.pos, st.word,
                           f"given twice, on line {first.line}{also} and line {st.pos.line}",
                           "each command once")
        self.commands.setdefault(st.command, st.pos)
        self.words.setdefault(st.command, st.word)
        if self.blimp34 and st.command in BLIMP34_COMMANDS:
            self.failed.add(st.command)
            raise st.problem(None, "not supported yet (the script is read in Blimp 3/4's language: "
                             f"{self.dialect.reason})",
                             "a script without it; jaximpute reads Blimp 3/4's DATA, VARIABLES, "
                             "CLUSTERID, ORDINAL, FIXED, MISSING, MODEL, SEED, BURN, ITER, NIMPS, "
                             "CHAINS, OPTIONS and SAVE: stacked so far")
        readers: dict[str, Callable[[_Statement], object]] = {
            "DATA": lambda s: _read_path(s),
            "OUTFILE": self._read_outfile,
            "VARIABLES": self._read_variables,
            "ORDINAL": lambda s: self._read_unique_names(s, "variable"),
            "NOMINAL": lambda s: self._read_unique_names(s, "variable"),
            "FIXED": lambda s: self._read_unique_names(s, "variable"),
            "LEVEL1VARIABLES": lambda s: self._read_unique_names(s, "variable"),
            "CLUSTERID": self._read_clusterid,
            "OUTCOME": self._read_outcome,
            "MISSING": _read_number,
            "MODEL": _read_model34 if self.blimp34 else _read_model,
            "SEED": _read_single_int,
            "BURN": lambda s: _read_single_int(s, minimum=1),   # a burn-in is required (PSR)
            "NIMPS": _read_single_int,
            "ITERATIONS": _read_single_int,
            "THIN": lambda s: _read_single_int(s, minimum=1),
            "CHAINS": self._read_chains,
            "OPTIONS": self._read_options,
            "SAVE": self._read_save,
        }
        try:
            value = readers[st.command](st)
        except Problem:
            self.failed.add(st.command)
            raise
        if st.command not in _REPEATABLE:
            # the key is a command name and `value` its reader's result (the readers table above)
            self.values[st.command] = value  # type: ignore[literal-required]

    def _read_variables(self, st: _Statement) -> list[Name]:
        names = _read_names(st)
        if not names:
            raise st.problem(None, "no names given", "the data file's column names, in order")
        _check_unique(st, names, "column name")
        return names

    @staticmethod
    def _read_unique_names(st: _Statement, what: str) -> list[Name]:
        names = _read_names(st)
        _check_unique(st, names, what)
        return names

    @staticmethod
    def _read_clusterid(st: _Statement) -> list[Name]:
        names = _read_names(st, ranges=False)
        expected = "one cluster id, or two for three-level data"
        if not names:
            raise st.problem(None, "no id given", expected)
        if len(names) > 2:
            raise Problem(names[2].pos, st.word, f"{len(names)} ids given", expected)
        _check_unique(st, names, "cluster id")
        return names

    @staticmethod
    def _read_outcome(st: _Statement) -> Name:
        word = _one_word(st, "name", "the one dependent variable of the focal model")
        if word is None:
            raise st.problem(None, "no name given", "the dependent variable of the focal model")
        return _check_name(st, word)

    def _read_outfile(self, st: _Statement) -> tuple[str, Pos]:
        raw, index = _read_path(st)
        return raw, st.at(index)

    @staticmethod
    def _read_chains(st: _Statement) -> tuple[int, int | None]:
        """`k` or `k processors p`."""
        expected = "'k' or 'k processors p', such as '2 processors 2'"
        words = _words(st)
        chains = _read_int(st, words[0] if words else None, 1, "number of chains", 2)
        if len(words) == 1:
            return chains, None
        keyword, index = words[1]
        if keyword.lower() not in ("processors", "processor"):
            suggestion = did_you_mean(keyword, ["processors"])
            raise st.problem(index, f"{keyword!r} is not 'processors'{suggestion}",
                             expected)
        if len(words) == 2:
            raise st.problem(None, "no number after 'processors'", expected)
        if len(words) > 3:
            raise st.problem(words[3][1], f"unexpected {_show(words[3][0])} after the number of processors",
                             expected)
        return chains, _read_int(st, words[2], 1, "number of processors", 2)

    def _read_options(self, st: _Statement) -> list[str]:
        given: dict[str, int] = {}
        for word, index in _words(st):
            key = word.lower()
            if key not in OPTION_WORDS:
                raise st.problem(index, f"unknown option {word!r}{did_you_mean(word, OPTION_WORDS)}",
                                 "options from " + ", ".join(OPTION_WORDS))
            clash = option_clash(key, given)
            if clash:
                raise st.problem(index, f"{key!r} conflicts with {clash[0]!r}", clash[1])
            given.setdefault(key, index)
        for key, index in given.items():
            self.option_pos[key] = st.at(index)
        return list(given)

    def _read_save(self, st: _Statement) -> None:
        """`stacked = file` or `separate = file*.csv`: the later spelling of OUTFILE + OPTIONS."""
        expected = "'stacked = imps.csv' or 'separate = imp*.csv'"
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", st.masked)
        if not m:
            words = _words(st)
            found = _show(st.value.strip()) if words else "nothing"
            raise st.problem(words[0][1] if words else None, f"{found} is not 'name = file'", expected)
        key = m.group(1)
        if key.lower() not in _SAVE_KEYS:
            raise st.problem(m.start(1), f"unknown SAVE item {key!r}{did_you_mean(key, _SAVE_KEYS)}",
                             expected)
        raw, index = _read_path(st, m.end())
        self.saves.append(_Save(key.lower(), raw, st.at(m.start(1)), st.at(index)))

    # -- step 3 --------------------------------------------------------------------------------

    def cross_check(self, complete: bool) -> list[Problem]:
        """Problems of the script's own statements that involve several of them (the shared
        checks of every configuration are `config.problems`). `complete` is False when a syntax
        error cut the file short: then a missing command may just be beyond the cut, so it is
        not reported."""
        found: list[Problem] = []
        checks = [self._check_clusterid, self._check_output]
        if complete:
            checks.append(self._check_required)
        for check in checks:
            found.extend(check())
        return found

    def _check_required(self) -> Iterator[Problem]:
        if "MODEL" not in self.commands:
            yield Problem(Pos(1, 1), "MODEL", "required but not given",
                          "a statement such as 'MODEL: cluster ~ y x;'")

    def _check_clusterid(self) -> Iterator[Problem]:
        """CLUSTERID beside ids left of '~' in MODEL (the configuration holds MODEL's, whose
        names `config.problems` checks): its names must be variables and the same ids."""
        given, model = self.values.get("CLUSTERID"), self.values.get("MODEL")
        if given is None or not isinstance(model, _Model) or not model.ids:
            return
        variables = self.values.get("VARIABLES")
        if variables is not None:
            spellings = [v.text for v in variables]
            for name in given:
                if name.text.lower() not in {v.lower() for v in spellings}:
                    yield Problem(name.pos, self.words["CLUSTERID"],
                                  f"unknown variable {name.text!r}{did_you_mean(name.text, spellings)}",
                                  "a name from VARIABLES")
        if {n.text.lower() for n in given} != {n.text.lower() for n in model.ids}:
            ids = " ".join(n.text for n in model.ids)
            yield Problem(given[0].pos, self.words["CLUSTERID"],
                          f"{' '.join(n.text for n in given)!r} differs from the ids left of '~' in MODEL "
                          f"on line {self.commands['MODEL'].line} ({ids!r})",
                          "the same ids in both, or the ids in only one of them")

    def _check_output(self) -> Iterator[Problem]:
        """One output file, one format, and a '*' in the file name exactly when output is separate."""
        formats = [(pos, _FORMAT_OF_OPTION[key], "OPTIONS", key) for key, pos in self.option_pos.items()
                   if key in _FORMAT_OF_OPTION]
        formats += [(s.key_pos, s.fmt, "SAVE", s.fmt) for s in self.saves]
        formats.sort()
        conflict = False
        for pos, fmt, command, key in formats[1:]:
            if fmt != formats[0][1]:
                conflict = True
                first_pos, _, _, first_key = formats[0]
                yield Problem(pos, command,
                               f"{key!r} conflicts with {first_key!r} on line {first_pos.line}",
                               "one output format: stacked or separate")
        files = ([(self.values["OUTFILE"][1], "OUTFILE", self.values["OUTFILE"][0])]
                 if "OUTFILE" in self.values else [])
        files += [(s.path_pos, "SAVE", s.raw) for s in self.saves]
        files.sort()
        for pos, command, _ in files[1:]:
            yield Problem(pos, command, f"a second output file ({files[0][1]} on line {files[0][0].line})",
                           "one output file")
        # The '*' check needs the format: not when it is contradictory or could not be read.
        if files and not conflict and not self.failed & {"OPTIONS", "SAVE"}:
            pos, command, raw = files[0]
            fmt = formats[0][1] if formats else "stacked"
            stars = raw.count("*")
            if fmt == "separate" and stars != 1:
                yield Problem(pos, command,
                               f"{raw!r} has {stars or 'no'} '*' but the output is separate",
                               "a file name with one '*' for the imputation number, such as imp*.csv")
            elif fmt == "stacked" and stars:
                yield Problem(pos, command, f"{raw!r} has a '*' but the output is stacked (one file)",
                               "OPTIONS: separate; or a file name without '*'")

    # -- the result ------------------------------------------------------------------------------

    def build(self, path: Path | None) -> Config:
        values = self.values
        spelling = {v.text.lower(): v.text for v in values.get("VARIABLES", ())}

        def canon(name: Name) -> Name:
            """The VARIABLES spelling, keeping where and how the name was written."""
            text = spelling.get(name.text.lower(), name.text)
            return Name(text, name.pos, None if text == name.text else name.text)

        def names(command: Literal["ORDINAL", "NOMINAL", "FIXED", "LEVEL1VARIABLES", "CLUSTERID"]) -> tuple[Name, ...]:
            return tuple(canon(n) for n in values.get(command, ()))

        model = values.get("MODEL")
        terms = tuple(ModelTerm(t.kind, tuple(canon(n) for n in t.names), t.pos)
                      for t in (model.terms if model else ()))
        ids = model.ids if isinstance(model, _Model) else ()
        cluster_ids = tuple(canon(n) for n in ids) if ids else names("CLUSTERID")
        options = frozenset(values.get("OPTIONS", ()))
        separate = bool(options & {"separate", "sep"}) or any(s.fmt == "separate" for s in self.saves)
        outfile_raw: str | None = (values["OUTFILE"][0] if "OUTFILE" in values
                                   else self.saves[0].raw if self.saves else None)
        chains, processors = values.get("CHAINS", (4 if self.blimp34 else 2, None))
        priors = [p for p in _PRIORS if p in options]
        outcome = values.get("OUTCOME")
        commands = dict(self.commands)
        thin, iterations = values.get("THIN"), values.get("ITERATIONS")
        if isinstance(model, _Model34):
            # Blimp 3/4: the outcome is MODEL's left side; ITER counts the post-burn-in
            # iterations of all chains together, and NIMPS imputations are spaced evenly over
            # each chain's share (tests/fixtures/blimp_book/LANGUAGE.md, section 8)
            outcome = model.outcome
            if outcome is not None:
                commands.setdefault("OUTCOME", model.pos)
            if iterations is not None:
                iterations = -(-iterations // max(chains, 1))
                saves = -(-values.get("NIMPS", 0) // max(chains, 1))
                if thin is None and saves:
                    thin = max(1, iterations // saves)
        return Config(
            data=self._resolve(values["DATA"][0]) if "DATA" in values else None,
            variables=tuple(values["VARIABLES"]) if "VARIABLES" in values else None,
            ordinal=names("ORDINAL"),
            nominal=names("NOMINAL"),
            fixed=names("FIXED"),
            level1=names("LEVEL1VARIABLES"),
            missing=values.get("MISSING"),
            cluster_ids=cluster_ids,
            model=terms,
            model_pos=model.pos if model else None,
            outcome=canon(outcome) if outcome is not None else None,
            seed=values.get("SEED"),
            burn=values.get("BURN"),
            thin=thin,
            nimps=values.get("NIMPS", 0),
            iterations=iterations,
            chains=chains,
            processors=processors,
            outfile=self._resolve(outfile_raw) if outfile_raw is not None else None,
            output_format="separate" if separate else "stacked",
            stacked0="stacked0" in options,
            header="header" in options,
            psr="psr" in options,
            # Blimp 3/4 always summarises the posterior
            estimates="estimates" in options or self.blimp34,
            prior=priors[0] if priors else "prior2",
            options=options,
            dialect=self.dialect.name,
            dialect_reason=self.dialect.reason,
            origin=Origin("script", self.src.label, types.MappingProxyType(commands), path),
        )

    def _resolve(self, raw: str) -> Path:
        """~ expands; a relative path is relative to the script's folder."""
        path = Path(os.path.expanduser(raw))
        return Path(os.path.abspath(self.base / path))


def option_clash(key: str, given) -> tuple[str, str] | None:
    """(the earlier option `key` contradicts, what was expected), or None: for OPTIONS and for
    ``impute``'s `options` alike."""
    clashes: list[str] = []
    expected = ""
    if key in _FORMAT_OF_OPTION:
        fmt = _FORMAT_OF_OPTION[key]
        clashes = [k for k in given if _FORMAT_OF_OPTION.get(k, fmt) != fmt]
        expected = "one output format: stacked (or stacked0) or separate"
    elif key in ("psr", "nopsr"):
        clashes = [k for k in given if k in ("psr", "nopsr") and k != key]
        expected = "psr or nopsr, not both"
    elif key in _PRIORS:
        clashes = [k for k in given if k in _PRIORS and k != key]
        expected = "one prior: prior1, prior2 or prior3"
    return (clashes[0], expected) if clashes else None


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def parse_script(text: str, path: str | Path | None = None) -> Config:
    """Parse and validate a script's text. `path` names the script in messages and is the folder
    that relative DATA and OUTFILE paths are resolved against (the working directory if None).

    Raises ScriptError for the earliest problem in the file.
    """
    label = "<script>" if path is None else str(path)
    src = _Source(text, label)
    base = Path(path).parent if path is not None else Path.cwd()
    try:
        dialect = decide(src.text, lambda offset: src.pos(offset).line)
    except Ambiguous as a:
        raise ScriptError(_format(label, src.pos(a.offset), a.command or None, a.message)) from None
    reader = _Reader(src, base, dialect)
    found: list[Problem] = []
    complete = True
    try:
        for st in _statements(src, reader.blimp34):
            try:
                reader.take(st)
            except Problem as p:  # keep reading: an earlier cross-statement problem may win
                found.append(p)
    except Problem as p:  # the statement structure is broken: nothing after it can be trusted
        found.append(p)
        complete = False
    found.extend(reader.cross_check(complete))
    config = reader.build(Path(path) if path is not None else None)
    found.extend(problems(config))
    raise_first(found, config.origin, config)
    return config


def parse_names(text: str, label: str, command: str) -> list[str]:
    """A string of names as `impute`'s list arguments take it ("y x", "a1-a4"): the names, read
    as the script reads a list of names, each once. Raises ScriptError '{label}: argument: ...'."""
    flat = " ".join(text.splitlines())
    st = _Statement(command, command, Pos(1, 0), 0, flat, flat, _Source(flat, label))
    try:
        return [n.text for n in _Reader._read_unique_names(st, "variable")]
    except Problem as p:
        raise ScriptError(p.message(Origin("arguments", label, {command: Pos(1, 0)}))) from None


def parse_model(text: str, label: str) -> tuple[tuple[Name, ...], tuple[ModelTerm, ...], Pos]:
    """A MODEL string on its own (``impute``'s `model`): (cluster ids, terms, position), with
    positions Pos(1, column) in the string (line breaks read as spaces). Raises ScriptError
    '{label}: model, column c: ...' for a string that is not MODEL's grammar."""
    flat = " ".join(text.splitlines())
    src = _Source(flat, label)
    st = _Statement("MODEL", "MODEL", Pos(1, 0), 0, flat, flat, src)
    try:
        model = _read_model(st)
    except Problem as p:
        origin = Origin("arguments", label, {"MODEL": Pos(1, 0)})
        raise ScriptError(p.message(origin)) from None
    return model.ids, model.terms, model.pos


def read_script(path: str | Path) -> Config:
    """Read a script file (UTF-8; a byte-order mark is allowed) and parse it."""
    label = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ScriptError(f"{label}: cannot read the script ({reason}); "
                          "expected a readable script file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ScriptError(_format(label, _byte_pos(data, e.start), None,
                                  f"byte 0x{data[e.start]:02x} is not UTF-8 text; "
                                  "expected a script saved as UTF-8 (or plain ASCII)")) from None
    return parse_script(text, path)


def _byte_pos(data: bytes, offset: int) -> Pos:
    """Line and column (in characters) of a byte offset in data that is valid UTF-8 before it."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    prefix = data[line_start:offset].decode("utf-8", errors="replace")
    if data.startswith(b"\xef\xbb\xbf") and line_start == 0:
        prefix = prefix[1:]  # the byte-order mark is no column
    return Pos(data.count(b"\n", 0, offset) + 1, len(prefix) + 1)
