"""Which language a script is written in: Blimp 2's, the seed document's (``MODEL: cluster ~ y:x
w; OUTCOME: y;``: cluster ids left of '~', ``y:x`` a random slope), or Blimp 3/4's, what researchers
write today (``CLUSTERID: cluster; MODEL: y ~ x w | x;``: the outcome left of '~', random effects
after '|', ``a1:a9`` a range of names).

The same text can mean different models in the two: ``MODEL: score ~ y x1;`` is a two-level model
with cluster id ``score`` in Blimp 2 and a single-level regression of ``score`` in Blimp 3/4. So the
language is decided first, from what only one of them has, and printed in the report:

1. Blimp 2 only: the commands OUTCOME, OUTFILE and VARNAMES; a MODEL with no '~' (Blimp 2's
   joint and single-level lists); a random slope ``y:x`` that is no range of names; cluster ids
   left of '~' that CLUSTERID names too.
2. Blimp 3/4 only: the commands ITER, CENTER, LATENT, RANDOMEFFECT, PARAMETERS, SIMPLE, WALDTEST,
   TEST, FCS, TIMEID, TRANSFORM, BYGROUP, COUNT, WEIGHT, DROPOUT, FILTER, OUTPUT and SIMULATE;
   in MODEL '|', '->', '~~', '<->', '{', '@', ``x.mean``, the terms ``intercept`` and ``1``, and
   several equations; a CLUSTERID beside a MODEL whose left side is not a cluster id.
3. Both kinds of marks: refused, naming one of each.
4. Neither: Blimp 2, unless ITERATIONS is given (every Blimp 3/4 script in the Blimp book and the
   user guide's examples gives ITER; Blimp 2's do not need it) and MODEL is ``a ~ ...``: then the
   script reads both ways and is refused with the spelling of each.

The evidence (131 native Blimp 3/4 scripts, 321 rblimp calls, Blimp 2 scripts) is summarised in
tests/fixtures/blimp_book/LANGUAGE.md, section 9.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import did_you_mean

BLIMP2 = "Blimp 2"
BLIMP34 = "Blimp 3/4"

BLIMP2_COMMANDS = ("OUTCOME", "OUTFILE", "VARNAMES")
BLIMP34_COMMANDS = ("ITER", "CENTER", "LATENT", "RANDOMEFFECT", "PARAMETERS", "SIMPLE", "WALDTEST",
                    "TEST", "FCS", "TIMEID", "TRANSFORM", "BYGROUP", "COUNT", "WEIGHT", "DROPOUT",
                    "FILTER", "OUTPUT", "SIMULATE")

# Blimp 3/4's marks inside MODEL: (pattern, what it is)
_MODEL_MARKS = (
    (r"\|", "'|' (random effects)"),
    (r"->|–>", "'->'"),
    (r"~~|<->", "a covariance ('~~')"),
    (r"\{", "'{'"),
    (r"@", "'@' (a label or a fixed value)"),
    (r"\b[A-Za-z_][A-Za-z0-9_]*\.mean\b", "a '.mean' term"),
    (r"(?<![A-Za-z0-9_.])(?i:intercept)(?![A-Za-z0-9_.])", "the term 'intercept'"),
    (r"(?<![A-Za-z0-9_.@\[])1(?![A-Za-z0-9_.\[])", "the term '1'"),
)
_NAME = r"[A-Za-z_.][A-Za-z0-9_.]*"


@dataclass(frozen=True)
class Dialect:
    """The language a script was read in and the rule that decided it (for the report)."""

    name: str
    reason: str


class Ambiguous(Exception):
    """A script that reads both ways, or has marks of both: (offset, command, message)."""

    def __init__(self, offset: int, command: str, message: str):
        super().__init__(message)
        self.offset, self.command, self.message = offset, command, message


def _blank_comments(text: str) -> str:
    return re.sub(r"#[^\n]*", lambda m: " " * len(m.group()), text)


def _statements(text: str):
    """(offset of the statement, command word upper-cased or None, offset of its value, value)."""
    start = 0
    for part in text.split(";"):
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*:(?!:)", part)
        if m:
            yield start + m.start(1), m.group(1).upper(), start + m.end(), part[m.end():]
        else:
            yield start, None, start, part
        start += len(part) + 1


def _is_range(a: str, b: str) -> bool:
    """a1:a9 (Blimp 3/4 names a range): the same text around one differing number."""
    ma, mb = re.fullmatch(r"(.*?)(\d+)(\D*)", a), re.fullmatch(r"(.*?)(\d+)(\D*)", b)
    return bool(ma and mb and ma.group(1) == mb.group(1) and ma.group(3) == mb.group(3))


def decide(text: str, line_of) -> Dialect:
    """The script's language (module docstring). `line_of(offset)` gives a line number for the
    reasons. Raises Ambiguous for a script with marks of both, or one that reads both ways."""
    text = _blank_comments(text.replace("\r\n", "\n").replace("\r", "\n"))
    two: list[tuple[int, str]] = []
    three: list[tuple[int, str]] = []
    commands: dict[str, tuple[int, str]] = {}
    model: tuple[int, str] | None = None
    in_model = False
    known = set(BLIMP2_COMMANDS + BLIMP34_COMMANDS) | {
        "DATA", "VARIABLES", "ORDINAL", "NOMINAL", "MISSING", "MODEL", "CLUSTERID", "FIXED",
        "LEVEL1VARIABLES", "SEED", "BURN", "THIN", "NIMPS", "ITERATIONS", "CHAINS", "OPTIONS", "SAVE"}
    for offset, word, vstart, value in _statements(text):
        if word in known:
            in_model = word == "MODEL"
            commands.setdefault(word, (offset, value))
            if word in BLIMP2_COMMANDS:
                two.append((offset, f"{word} on line {line_of(offset)}"))
            elif word in BLIMP34_COMMANDS:
                three.append((offset, f"{word} on line {line_of(offset)}"))
            if word == "MODEL":
                    model = model or (vstart, value)
        elif in_model and value.strip() and not (word and did_you_mean(word, tuple(known))):
            # a statement with no command after MODEL: MODEL's next equation, or a block label
            # (a misspelt command is left to the reader's 'unknown command' message)
            three.append((offset, f"a second statement in MODEL on line {line_of(offset)}"))
    if model is not None:
        vstart, value = model
        for pattern, what in _MODEL_MARKS:
            m = re.search(pattern, value)
            if m:
                three.append((vstart + m.start(), f"{what} in MODEL on line {line_of(vstart + m.start())}"))
        if "~" not in value and "->" not in value and "–>" not in value and value.strip():
            two.append((vstart, f"MODEL without '~' on line {line_of(vstart)}"))
        for m in re.finditer(rf"({_NAME})\s*:\s*({_NAME})", value):
            if not _is_range(m.group(1), m.group(2)):
                two.append((vstart + m.start(), f"the random slope '{m.group(1)}:{m.group(2)}' in MODEL "
                                                f"on line {line_of(vstart + m.start())}"))
        left_ids = value.split("~")[0].split() if "~" in value else []
        ids = {w.lower() for w in commands["CLUSTERID"][1].split()} if "CLUSTERID" in commands else set()
        if ids and left_ids:
            if {w.lower() for w in left_ids} == ids:
                two.append((vstart, f"the cluster ids of CLUSTERID left of '~' in MODEL on line "
                                    f"{line_of(vstart)}"))
            elif not ids & {w.lower() for w in left_ids}:
                three.append((vstart, f"CLUSTERID beside an outcome left of '~' in MODEL on line "
                                      f"{line_of(vstart)}"))
    if two and three:
        (o2, r2), (o3, r3) = min(two), min(three)
        raise Ambiguous(max(o2, o3), "",
                        f"the script mixes Blimp 2's language ({r2}) with Blimp 3/4's ({r3}); "
                        "expected one language: Blimp 2's (cluster ids left of '~', OUTCOME, "
                        "'y:x' slopes) or Blimp 3/4's (CLUSTERID, 'y ~ x | x')")
    if two:
        return Dialect(BLIMP2, min(two)[1])
    if three:
        return Dialect(BLIMP34, min(three)[1])
    if model is not None and "ITERATIONS" in commands and "~" in model[1] and not commands.get("CLUSTERID"):
        vstart, value = model
        left = " ".join(value.split("~")[0].split())
        right = " ".join(value.split("~", 1)[1].split())
        raise Ambiguous(vstart, "MODEL",
                        f"'{left} ~ {right}' reads two ways: in Blimp 2, '{left}' is the cluster "
                        f"id of a two-level model of {right}; in Blimp 3/4, a single-level "
                        f"regression of '{left}' on {right}; expected one of: 'CLUSTERID: {left};' "
                        f"beside it (Blimp 2), or 'MODEL: {left} ~ intercept {right};' (Blimp 3/4)")
    return Dialect(BLIMP2, "no mark of Blimp 3/4's language (and no ITER or ITERATIONS)")
