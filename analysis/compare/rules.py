"""Go/no-go rules: read a rule file (TOML), check every field, evaluate the rules against a comparison's figures, and
decide GO or NO-GO (format and conventions: docs/conventions.md, "The go/no-go rule file").

Decisions taken here where the spec leaves room:

- Value bounds compare the candidate's point value: lower <= v <= upper.
- A change compares x = delta (on = "point"), the CI bound on the losing side (on = "ci_lower": ci_low for
  higher_is_better, ci_high for lower_is_better: the change must be shown to be within the threshold), or the bound
  on the winning side (on = "ci_upper": ci_high for higher_is_better, ci_low for lower_is_better: the rule fails
  only when the whole interval is beyond the threshold, "with 95% confidence worse than allowed"). `absolute`
  compares x itself, `relative` compares x / baseline: relative is defined once, as (candidate - baseline) /
  baseline, so the relative of a CI bound is that bound / baseline.
  higher_is_better passes iff x >= threshold, lower_is_better iff x <= threshold; given both, both must hold.
  `direction` is required in a change (explicit beats implicit, and either may be asked of any metric); `on`
  defaults to "point", the plain reading of "candidate - baseline must be >= absolute".
- Fail closed: a metric or slice the figures lack, or a NaN figure that a check needs, fails the rule.
- Fewer training runs per side than the rule's `min_runs` (3 by default for a block rule, 1 for a warn rule): the
  change is "insufficient evidence for a recipe decision", and a block rule in that state makes the verdict
  INSUFFICIENT EVIDENCE (exit 2), neither GO nor NO-GO: one checkpoint per side says nothing about a recipe.
- Fewer queries than the rule's `min_queries`, or a slice the statistics mark insufficient: "insufficient evidence",
  shown, never blocking (not even with strict).
- No baseline (a first run, or a NaN baseline): the change part is "skipped" ("first run: no baseline"); value bounds
  still apply.
- A failing warn rule has status "warn"; only a failing block rule has status "fail" and blocks.
- Multiplicity: a rule that expands to several slices (`category:*`, or a direction-mean metric split into I->T
  and T->I on a category) is one family. Holm adjusts its members' p-values (insufficient members take no part); a
  member whose change breaches the threshold fails only if its adjusted p is below 0.05; otherwise a block rule's
  member is a warning and a warn rule's member passes ("not significant after Holm"), so that forty noisy
  categories do not flag by chance (with `--strict` a flag would block a release). A value bound is a fact about
  the candidate, not a test of a change: its breach fails as it is. A single-slice rule decides by the comparison
  alone.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np
import pandas as pd

from analysis.stats import MAX_RESAMPLES, MIN_EFFECT, adjust_p_values, format_p
from chtn.errors import CHTNError
from chtn.files import read_bounded
from chtn.metrics import METRICS

CHANGE_DIRECTIONS = ("higher_is_better", "lower_is_better")
ON = ("point", "ci_lower", "ci_upper")
SEVERITIES = ("block", "warn")
ALPHA = 0.05  # a family member's change fails only with Holm-adjusted p below this
FIGURE_COLUMNS = (
    "metric",
    "slice",
    "n",
    "baseline",
    "candidate",
    "delta",
    "relative",
    "ci_low",
    "ci_high",
    "p_value",
    "insufficient",
)
DEFAULT_RULE = Path(__file__).with_name("default_rule.toml")
MAX_RULE_BYTES = 1_000_000  # a rule file is a few hundred bytes; a larger one was given by mistake
MAX_INTEGER = 2**63 - 1  # whole numbers beyond this (in magnitude) are refused: no setting needs one

_RULE_KEYS = ("metric", "slice", "value", "change", "severity", "min_queries", "min_runs", "name")
EXIT_CODES = {"GO": 0, "NO-GO": 1, "INSUFFICIENT EVIDENCE": 2}  # `chtn compare`'s exit status per verdict
MIN_RUNS = {"block": 3, "warn": 1}  # default training runs per side a change rule needs: a block rule decides recipes
_VALUE_KEYS = ("lower", "upper")
_CHANGE_KEYS = ("direction", "absolute", "relative", "on")
_STATS_KEYS = ("resamples", "seed", "multiplicity", "min_effect")


class RuleFileError(CHTNError):
    """A rule file that cannot be used; the message names the file, the line, the field and the fix."""


@dataclass(frozen=True)
class StatsSettings:
    """How the comparison behind the figures is computed (recorded with every decision)."""

    resamples: int = 10_000  # bootstrap and randomization resamples
    seed: int = 0
    multiplicity: Literal["holm"] = "holm"  # adjustment across the slices of a block rule
    min_effect: float = MIN_EFFECT  # a significant loss at least this large is named even within a rule's tolerance


@dataclass(frozen=True)
class Rule:
    """One `[[rule]]` table, checked."""

    index: int  # 0-based position in the file
    line: int  # 1-based line of its [[rule]] header
    metric: str
    slice: str  # "overall", "category:*" or "category:<Name>"
    value_lower: float | None
    value_upper: float | None
    direction: Literal["higher_is_better", "lower_is_better"] | None  # None: no change block
    absolute: float | None
    relative: float | None
    on: Literal["point", "ci_lower", "ci_upper"]
    severity: Literal["block", "warn"]
    min_queries: int = 20
    name: str = ""  # display name; empty means f"{metric} on {slice}"
    min_runs: int = 1  # training runs per side the change check needs (MIN_RUNS by severity when not given)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"{self.metric} on {self.slice}")


@dataclass(frozen=True)
class RuleSet:
    """A checked rule file, with its text and hash for the decision record."""

    stats: StatsSettings
    rules: tuple[Rule, ...]
    text: str  # the file's text, verbatim
    sha256: str  # of `text` encoded as UTF-8
    source: str  # where the text came from (shown in error messages)


@dataclass(frozen=True)
class RuleResult:
    """One rule on one (metric, slice) after expansion."""

    rule: Rule
    metric: str
    slice: str
    status: Literal["pass", "fail", "warn", "insufficient evidence", "skipped"]
    reason: str  # one line, with the figures
    figures: dict[str, float | int | bool] = field(default_factory=dict)  # the numbers used, p_adj included
    too_few_runs: bool = False  # insufficient evidence for a recipe decision: fewer training runs than min_runs

    @property
    def blocking(self) -> bool:
        """A failing block rule (a failing warn rule has status "warn")."""
        return self.status == "fail" and self.rule.severity == "block"


@dataclass(frozen=True)
class Decision:
    """GO, NO-GO, or INSUFFICIENT EVIDENCE (a block rule had too few training runs to decide), with what made it so."""

    verdict: Literal["GO", "NO-GO", "INSUFFICIENT EVIDENCE"]
    exit_code: int  # 0 GO, 1 NO-GO, 2 insufficient evidence (docs/conventions.md, pytest's convention)
    blocking: list[RuleResult]
    warnings: list[RuleResult]
    summary: str
    tolerated: list[RuleResult] = field(default_factory=list)  # significant losses that pass within a tolerance


# --- reading and checking a rule file ----------------------------------------------------------------------------


def read_rules(path: Path | None = None) -> RuleSet:
    """The rule file at `path`, or the default rule shipped with the package (None)."""
    path = DEFAULT_RULE if path is None else Path(path)
    source = path.name if path == DEFAULT_RULE else str(path)
    fix = "Point to a rule file (TOML text), or leave it out to use the default rule."
    try:  # bytes, then decode: the text (and its hash) stays verbatim
        text = read_bounded(path, MAX_RULE_BYTES, "The rule file", fix).decode("utf-8")
    except CHTNError as exc:
        raise RuleFileError(str(exc)) from None
    except FileNotFoundError:
        raise RuleFileError(
            f"{source}: no such rule file. Check the path, or leave it out to use the default rule."
        ) from None
    except UnicodeDecodeError:
        raise RuleFileError(f"{source}: not UTF-8 text. Save the rule file as UTF-8 (TOML files are UTF-8).") from None
    except OSError as exc:
        raise RuleFileError(f"{source}: cannot be read ({exc.strerror}). Point to a readable rule file.") from None
    return load_rules(text, source)


def load_rules(text: str, source: str = "<rule>") -> RuleSet:
    """Parse and check a rule file's text; every problem is a RuleFileError naming file, line and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # tomllib's message carries "(at line L, column C)"
        raise RuleFileError(f"{source}: not valid TOML: {exc}. Fix the syntax at that line.") from None
    except RecursionError:  # tomllib's parser recurses once per nested array or inline table
        raise RuleFileError(
            f"{source}: arrays or tables are nested too deeply to read. A rule file nests at most two levels "
            "(rule = [{ change = { ... } }]): see the default rule."
        ) from None
    except ValueError:  # Python refuses to convert integers of over 4,300 digits (sys.get_int_max_str_digits)
        long = re.search(r"[0-9a-fA-F_]{4000,}", text)
        where = f", line {text.count(chr(10), 0, long.start()) + 1}" if long else ""
        raise RuleFileError(
            f"{source}{where}: a number has too many digits to read. Write thresholds as decimals such as -0.005."
        ) from None
    check = _Checker(text, source)
    check.integers(data)
    for key in data:
        if key not in ("stats", "rule"):
            check.fail(
                (key,),
                f"unknown top-level key {_show(key)}.",
                "A rule file has only a [stats] table and [[rule]] tables.",
            )
    stats = check.stats(data.get("stats", {}))
    entries = data.get("rule", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        check.fail(("rule",), "rules must be tables in an array.", "Start each rule with a [[rule]] header.")
    if not entries:
        check.fail(("rule",), "the file has no rules.", "Add at least one [[rule]] table (see the default rule).")
    rules = tuple(check.rule(entry, index) for index, entry in enumerate(entries))
    return RuleSet(stats, rules, text, hashlib.sha256(text.encode("utf-8")).hexdigest(), source)


# Line numbers are found in the text by hand: tomllib returns plain dicts without positions. A line-based scan is
# enough for rule files: table headers are lines of their own, and a key's line is the first line of its section
# that assigns it, as a dotted key (change.direction = ...), inside an inline table (change = { direction = ... }),
# or under a sub-table header ([rule.change] then direction = ...). A header or key inside a multi-line string
# could mislead the scan; the fallback is the rule's header line.
_HEADER = re.compile(r"""^\s*(\[\[?)\s*([\w\-."' ]+?)\s*\]\]?\s*(#.*)?$""")
_KEY = re.compile(r"""^\s*([\w\-."' ]+?)\s*=""")


def _parts(name: str) -> tuple[str, ...]:
    """A dotted TOML key as its parts, without quotes and spaces (quoted keys with dots inside are not split right)."""
    return tuple(part.strip().strip("\"'") for part in name.split("."))


@dataclass(frozen=True)
class _Section:
    """The lines under one table header (or the top of the file, before any header)."""

    name: tuple[str, ...]  # () for the top of the file
    array: bool  # a [[...]] header
    header: int  # 0-based line of the header (-1 for the top of the file)
    end: int  # 0-based line after the section's last line


class _Locator:
    """Where a field of the rule file is written, by line (1-based)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        starts: list[tuple[int, tuple[str, ...], bool]] = [(-1, (), False)]
        for number, line in enumerate(self.lines):
            if match := _HEADER.match(line):
                starts.append((number, _parts(match.group(2)), match.group(1) == "[["))
        ends = [start for start, _, _ in starts[1:]] + [len(self.lines)]
        self.sections = [_Section(name, array, start, end) for (start, name, array), end in zip(starts, ends)]
        self.rule_headers = [i for i, s in enumerate(self.sections) if s.array and s.name == ("rule",)]

    def rule_line(self, index: int) -> int:
        """The line of the index-th [[rule]] header; else (rules as an inline array) of `rule =`, else 1."""
        if index < len(self.rule_headers):
            return self.sections[self.rule_headers[index]].header + 1
        return self.field_line(("rule",), None)

    def field_line(self, path: tuple[str, ...], rule: int | None) -> int:
        """The first line that writes `path` (relative to the index-th rule, or to the top of the file for None)."""
        if rule is None:
            sections, relative, fallback = self.sections, 0, 1
        elif rule < len(self.rule_headers):
            first = self.rule_headers[rule]
            last = first + 1  # the rule's own section, then its sub-tables ([rule.change]) up to the next other header
            while (
                last < len(self.sections)
                and self.sections[last].name[:1] == ("rule",)
                and not self.sections[last].array
            ):
                last += 1
            sections, relative, fallback = self.sections[first:last], 1, self.sections[first].header + 1
        else:
            return self.rule_line(rule)
        enclosing = None  # an inline table or sub-table header that contains the field
        for section in sections:
            name = section.name[relative:]
            if name != path[: len(name)]:
                continue
            rest = path[len(name) :]
            if not rest and section.header >= 0:
                enclosing = enclosing or section.header + 1
            for number in range(section.header + 1, section.end):
                match = _KEY.match(self.lines[number])
                key = _parts(match.group(1)) if match else ()
                if key and key == rest:
                    return number + 1
                if key and key == rest[: len(key)]:
                    enclosing = enclosing or number + 1
        return enclosing or fallback


class _Checker:
    """Checks the parsed file field by field, raising RuleFileError with the field's line."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.locate = _Locator(text)

    def fail(self, path: tuple[str, ...], problem: str, fix: str, rule: int | None = None) -> NoReturn:
        where = f"line {self.locate.field_line(path, rule)}"
        if rule is not None:
            where += f" ([[rule]] #{rule + 1})"
        elif path[0] == "stats":
            where += " ([stats])"
        raise RuleFileError(f'{self.source}, {where}, field "{".".join(path)}": {problem}' + (f" {fix}" if fix else ""))

    def integers(self, data: dict[str, Any]) -> None:
        """Refuse any whole number beyond MAX_INTEGER in magnitude, wherever it is (no setting needs one, and
        `float()` overflows or a resampling loop never ends on one)."""
        fix = f"Whole numbers may be at most {MAX_INTEGER:,} in magnitude; thresholds are decimals such as -0.005."

        def walk(value: Any, path: tuple[str, ...], rule: int | None) -> None:
            if isinstance(value, dict):
                for key, item in value.items():
                    walk(item, (*path, key), rule)
            elif isinstance(value, list):
                for item in value:
                    walk(item, path, rule)
            elif _is_int(value) and abs(value) > MAX_INTEGER:
                self.fail(path or ("rule",), "is a whole number too large to use.", fix, rule)

        for key, value in data.items():
            if key == "rule" and isinstance(value, list):
                for index, entry in enumerate(value):
                    walk(entry, (), index)
            else:
                walk(value, (key,), None)

    def stats(self, table: Any) -> StatsSettings:
        if not isinstance(table, dict):
            self.fail(("stats",), "must be a table.", "Write it as a [stats] table.")
        self._known(table, _STATS_KEYS, ("stats",), None)
        settings = StatsSettings(**table)
        if not _is_int(settings.resamples) or not 100 <= settings.resamples <= MAX_RESAMPLES:
            problem = f"{_show(settings.resamples)} is not a whole number from 100 to {MAX_RESAMPLES:,}."
            self.fail(("stats", "resamples"), problem, "Use 10000 (the convention).")
        if not _is_int(settings.seed) or settings.seed < 0:
            self.fail(
                ("stats", "seed"), f"{_show(settings.seed)} is not a whole number >= 0.", "Use 0, or any seed >= 0."
            )
        if isinstance(settings.min_effect, bool) or not isinstance(settings.min_effect, int | float):
            self.fail(("stats", "min_effect"), f"{_show(settings.min_effect)} is not a number.", "Use 0.01.")
        if not 0 <= settings.min_effect < 1:
            self.fail(
                ("stats", "min_effect"),
                f"{_show(settings.min_effect)} is not a change of AP from 0 to below 1.",
                "Use 0.01 (one AP point).",
            )
        if settings.multiplicity != "holm":
            self.fail(("stats", "multiplicity"), f"{_show(settings.multiplicity)} is not supported.", 'Use "holm".')
        return settings

    def rule(self, entry: dict[str, Any], index: int) -> Rule:
        self._known(entry, _RULE_KEYS, (), index)
        for key in ("metric", "slice", "severity"):
            if key not in entry:
                self.fail((key,), "is missing.", f"Every rule needs {key} = ...", index)
        metric, slice_, severity = entry["metric"], entry["slice"], entry["severity"]
        if not isinstance(metric, str) or metric not in METRICS:
            self.fail(("metric",), f"{_show(metric)} is not a metric.", f"Use one of {', '.join(METRICS)}.", index)
        if not isinstance(slice_, str) or not (slice_ == "overall" or re.fullmatch(r"category:(\*|.*\S.*)", slice_)):
            fix = 'Use "overall", "category:*" (every category) or "category:<Name>" (one category).'
            self.fail(("slice",), f"{_show(slice_)} is not a slice.", fix, index)
        if severity not in SEVERITIES:
            self.fail(("severity",), f"{_show(severity)} is not one of {', '.join(SEVERITIES)}.", "", index)
        if "value" not in entry and "change" not in entry:
            fix = "Give value = { lower = ... } and/or change = { direction = ..., absolute = ... }."
            self.fail(("change",), "the rule has neither value nor change.", fix, index)
        min_queries = entry.get("min_queries", 20)
        if not _is_int(min_queries) or min_queries < 1:
            self.fail(("min_queries",), f"{_show(min_queries)} is not a whole number >= 1.", "Use 20.", index)
        min_runs = entry.get("min_runs", MIN_RUNS[severity])
        if not _is_int(min_runs) or not 1 <= min_runs <= 1000:
            fix = (
                f"Use {MIN_RUNS[severity]} (the default for a {severity} rule), or 1 to decide between two checkpoints."
            )
            self.fail(("min_runs",), f"{_show(min_runs)} is not a whole number from 1 to 1000.", fix, index)
        name = entry.get("name", "")
        if not isinstance(name, str):
            self.fail(("name",), f"{_show(name)} is not a string.", 'Write it in quotes: name = "...".', index)
        lower, upper = self._value(entry["value"], index) if "value" in entry else (None, None)
        direction, absolute, relative, on = self._change(entry["change"], index) if "change" in entry else (None,) * 4
        return Rule(
            index=index,
            line=self.locate.rule_line(index),
            metric=metric,
            slice=slice_,
            value_lower=lower,
            value_upper=upper,
            direction=direction,
            absolute=absolute,
            relative=relative,
            on=on or "point",
            severity=severity,
            min_queries=min_queries,
            name=name,
            min_runs=min_runs,
        )

    def _value(self, table: Any, index: int) -> tuple[float | None, float | None]:
        if not isinstance(table, dict):
            self.fail(("value",), "must be a table.", "Write value = { lower = ..., upper = ... }.", index)
        self._known(table, _VALUE_KEYS, ("value",), index)
        if not table:
            self.fail(("value",), "has no bound.", "Give lower and/or upper, or drop value.", index)
        lower, upper = (self._number(table, ("value", key), index) for key in _VALUE_KEYS)
        if lower is not None and upper is not None and lower > upper:
            self.fail(("value",), f"lower {lower:g} is above upper {upper:g}.", "Swap or correct the bounds.", index)
        return lower, upper

    def _change(self, table: Any, index: int) -> tuple[Any, float | None, float | None, Any]:
        if not isinstance(table, dict):
            fix = 'Write change = { direction = "higher_is_better", absolute = ... }.'
            self.fail(("change",), "must be a table.", fix, index)
        self._known(table, _CHANGE_KEYS, ("change",), index)
        direction = table.get("direction")
        if direction is None:
            fix = 'Add direction = "higher_is_better" or "lower_is_better": it is never guessed.'
            self.fail(("change", "direction"), "is missing.", fix, index)
        if direction not in CHANGE_DIRECTIONS:
            self.fail(
                ("change", "direction"), f"{_show(direction)} is not one of {', '.join(CHANGE_DIRECTIONS)}.", "", index
            )
        on = table.get("on", "point")
        if on not in ON:
            self.fail(("change", "on"), f"{_show(on)} is not one of {', '.join(ON)}.", "", index)
        if "absolute" not in table and "relative" not in table:
            fix = "Give absolute (candidate - baseline) and/or relative ((candidate - baseline) / baseline)."
            self.fail(("change",), "has neither absolute nor relative.", fix, index)
        absolute, relative = (self._number(table, ("change", key), index) for key in ("absolute", "relative"))
        return direction, absolute, relative, on

    def _number(self, table: dict[str, Any], path: tuple[str, ...], index: int) -> float | None:
        value = table.get(path[-1])
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"{_show(value)} is not a number.", "Write a number without quotes, e.g. -0.005.", index)
        if not math.isfinite(value):
            self.fail(path, f"{_show(value)} is not a finite number.", "Use a finite threshold.", index)
        return float(value)

    def _known(self, table: dict[str, Any], keys: tuple[str, ...], path: tuple[str, ...], index: int | None) -> None:
        for key in table:
            if key not in keys:
                self.fail((*path, key), f"unknown key {_show(key)}.", f"Use one of {', '.join(keys)} (a typo?).", index)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """A value as the file writes it: strings in double quotes."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


# --- evaluating rules against the figures ------------------------------------------------------------------------


def evaluate(
    rules: RuleSet, figures: pd.DataFrame, categories: Sequence[str], has_baseline: bool = True
) -> list[RuleResult]:
    """One result per rule and expanded (metric, slice), in file order (see the module docstring for semantics)."""
    absent = [column for column in FIGURE_COLUMNS if column not in figures.columns]
    if absent:
        raise ValueError(f"The figures lack the columns {absent}.")
    rows = {(row["metric"], row["slice"]): row for row in figures.to_dict("records")}
    results: list[RuleResult] = []
    for rule in rules.rules:
        targets = _expand(rule, categories)
        if not targets:
            reason = f"missing: no categories in the data for {rule.slice} (fails closed)"
            results.append(_failed(rule, rule.metric, rule.slice, reason, {}))
            continue
        family = len(targets) > 1
        assessed = [
            _assess(rule, metric, slice_, rows.get((metric, slice_)), has_baseline, family)
            for metric, slice_ in targets
        ]
        p_adj = _holm(assessed, rules.stats.multiplicity) if family else [None] * len(assessed)
        results.extend(_conclude(rule, item, p) for item, p in zip(assessed, p_adj))
    return results


def decide(results: Sequence[RuleResult], strict: bool = False, min_effect: float = MIN_EFFECT) -> Decision:
    """GO unless a block rule fails (or, with strict, anything warns). Insufficient and skipped never block.

    The summary also names every significant loss that passed only because it stays within its rule's tolerance
    (a family member with Holm-adjusted p below ALPHA and a loss of at least `min_effect`): "GO, 0 warnings" must
    not hide a category that got reliably worse.
    """
    blocking = [result for result in results if result.blocking]
    warnings = [result for result in results if result.status == "warn"]
    tolerated = [result for result in results if _tolerated_loss(result, min_effect)]
    short = [result for result in results if result.too_few_runs and result.rule.severity == "block"]
    verdict: Literal["GO", "NO-GO", "INSUFFICIENT EVIDENCE"]
    if blocking or (strict and warnings):
        verdict = "NO-GO"
    else:
        verdict = "INSUFFICIENT EVIDENCE" if short else "GO"
    if blocking:
        names = ", ".join(_label(result.metric, result.slice) for result in blocking)
        head = f"{len(blocking)} block rule{' fails' if len(blocking) == 1 else 's fail'} ({names})"
    elif short:
        f = short[0].figures
        head = (
            f"no recipe decision: {len(short)} block rule{'s' if len(short) > 1 else ''} "
            f"need{'' if len(short) > 1 else 's'} {short[0].rule.min_runs} training runs per side, and there "
            f"{'is' if f['runs_a'] == 1 else 'are'} {f['runs_a']} of A and {f['runs_b']} of B (train more seeds, or "
            "set min_runs = 1 to decide between these two checkpoints)"
        )
    else:
        head = "no block rule fails"
    tail = f"{len(warnings)} warning{'' if len(warnings) == 1 else 's'}"
    if strict and warnings:
        tail += " (strict: warnings block)"
    summary = f"{verdict}: {head}; {tail}"
    if tolerated:
        losses = "; ".join(_loss_text(result) for result in tolerated)
        summary += f"; {len(tolerated)} significant loss{'es' if len(tolerated) > 1 else ''} within tolerance: {losses}"
    return Decision(verdict, EXIT_CODES[verdict], blocking, warnings, summary, tolerated)


def _tolerated_loss(result: RuleResult, min_effect: float) -> bool:
    """A passing family member whose change is a loss of at least `min_effect`, significant after Holm."""
    figures, rule = result.figures, result.rule
    if result.status != "pass" or rule.direction is None or not _finite(figures.get("p_adj")):
        return False
    loss = -figures["delta"] if rule.direction == "higher_is_better" else figures["delta"]
    return bool(figures["p_adj"] < ALPHA and loss >= min_effect)


def _loss_text(result: RuleResult) -> str:
    """ "MAP T->I on Formal Shoes −0.040 [−0.053, −0.025], Holm p 0.004 (tolerance −0.05)"."""
    f, rule = result.figures, result.rule
    tolerance = ", ".join(
        text
        for text in (
            f"{rule.absolute:+g}" if rule.absolute is not None else "",
            f"{rule.relative:+.0%} relative" if rule.relative is not None else "",
        )
        if text
    )
    return (
        f"{_label(result.metric, result.slice)} {f['delta']:+.3f} [{f['ci_low']:+.3f}, {f['ci_high']:+.3f}], "
        f"Holm p {format_p(f['p_adj'])} (tolerance {tolerance})"
    )


def rules_table(results: Sequence[RuleResult]) -> pd.DataFrame:
    """The results as the page and the report show them."""
    columns = ["rule", "line", "metric", "slice", "severity", "status", "reason"]
    rows = [(r.rule.name, r.rule.line, r.metric, r.slice, r.rule.severity, r.status, r.reason) for r in results]
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class _Assessment:
    """A member's comparison before multiplicity and severity are applied."""

    metric: str
    slice: str
    state: Literal["missing", "insufficient", "runs", "checked"]  # runs: too few training runs for the change
    text: str  # the reason, or its clauses for "checked"
    figures: dict[str, float | int | bool]
    value_failed: bool = False
    change_failed: bool = False
    change_checked: bool = False  # False: no change part, or skipped for want of a baseline


def _expand(rule: Rule, categories: Sequence[str]) -> list[tuple[str, str]]:
    """The (metric, slice) pairs a rule covers: a direction-mean metric on a category becomes its two directions."""
    if rule.slice == "overall":
        return [(rule.metric, "overall")]
    names = list(categories) if rule.slice == "category:*" else [rule.slice.removeprefix("category:")]
    split = f"{rule.metric}_i2t" in METRICS
    metrics = [f"{rule.metric}_i2t", f"{rule.metric}_t2i"] if split else [rule.metric]
    return [(metric, f"category:{name}") for name in names for metric in metrics]


def _assess(
    rule: Rule, metric: str, slice_: str, row: dict[str, Any] | None, has_baseline: bool, family: bool
) -> _Assessment:
    label = _label(metric, slice_)
    if row is None or not _finite(row["candidate"]):
        why = "is not in the figures" if row is None else "has no candidate value"
        return _Assessment(metric, slice_, "missing", f"missing: {label} {why} (fails closed)", {})
    numbers = {key: _plain(row[key]) for key in FIGURE_COLUMNS[2:]}
    if row["n"] < rule.min_queries or row["insufficient"]:
        need = f"< {rule.min_queries} required" if row["n"] < rule.min_queries else "below the statistics' minimum"
        text = f"{label}: {row['n']} queries {need}: insufficient evidence (shown, never blocking on its own)"
        return _Assessment(metric, slice_, "insufficient", text, numbers)
    clauses, value_failed = [], False
    for bound, lower in ((rule.value_lower, True), (rule.value_upper, False)):
        if bound is None:
            continue
        ok = bool(row["candidate"] >= bound if lower else row["candidate"] <= bound)
        value_failed |= not ok
        relation = (">=" if lower else "<=") if ok else ("below the lower bound" if lower else "above the upper bound")
        clauses.append(f"candidate {row['candidate']:.3f} {relation} {bound:g}")
    if rule.direction is None:
        return _Assessment(metric, slice_, "checked", " and ".join(clauses), numbers, value_failed)
    runs_a, runs_b = int(row.get("runs_a", 1)), int(row.get("runs_b", 1))
    if has_baseline and min(runs_a, runs_b) < rule.min_runs and not value_failed:
        text = (
            f"{label}: insufficient evidence for a recipe decision: {runs_a} run{'s' if runs_a > 1 else ''} of A and "
            f"{runs_b} of B, and this rule needs {rule.min_runs} training runs per side (train the recipes with more "
            "seeds, or set min_runs = 1 in the rule to decide between these two checkpoints)"
        )
        return _Assessment(metric, slice_, "runs", text, {**numbers, "runs_a": runs_a, "runs_b": runs_b})
    if not has_baseline or not _finite(row["baseline"]):
        clauses.append("change skipped (first run: no baseline)")
        return _Assessment(metric, slice_, "checked", " and ".join(clauses), numbers, value_failed)
    higher = rule.direction == "higher_is_better"
    if rule.on == "point":
        x, what = row["delta"], "change"
    elif (rule.on == "ci_lower") == higher:  # ci_lower: the losing side's bound; ci_upper: the winning side's
        x, what = row["ci_low"], "CI lower bound"
    else:
        x, what = row["ci_high"], "CI upper bound"
    needed = {what.lower(): x}  # what a check uses must be there: fail closed otherwise
    if family:
        needed["p-value"] = row["p_value"]
    if rule.relative is not None:
        needed["nonzero baseline"] = row["baseline"] or math.nan  # the relative change is undefined at 0
    for name, number in needed.items():
        if not _finite(number):
            return _Assessment(metric, slice_, "missing", f"missing: {label} has no {name} (fails closed)", numbers)
    change_failed = False
    for threshold, scale, unit in ((rule.absolute, 1.0, ""), (rule.relative, row["baseline"], "%")):
        if threshold is None:
            continue
        observed = x / scale
        ok = bool(observed >= threshold if higher else observed <= threshold)
        change_failed |= not ok
        shown, limit = (f"{observed:+.1%}", f"{threshold * 100:g}%") if unit else (f"{observed:+.3f}", f"{threshold:g}")
        relation = (">=" if higher else "<=") if ok else ("<" if higher else ">")
        subject = ("relative change" if what == "change" else f"{what} of the relative change") if unit else what
        clauses.append(f"{subject} {shown} {relation} {limit}{'' if ok else ' allowed'}")
    context = f"change {row['delta']:+.3f} (95% CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f})"
    return _Assessment(
        metric,
        slice_,
        "checked",
        ", ".join([context, " and ".join(clauses)]),
        numbers,
        value_failed,
        change_failed,
        True,
    )


def _holm(assessed: list[_Assessment], method: Literal["holm"]) -> list[float | None]:
    """Holm-adjusted p per member of a rule's family; None for members that take no part."""
    counted = [i for i, item in enumerate(assessed) if item.state == "checked" and item.change_checked]
    adjusted = adjust_p_values([assessed[i].figures["p_value"] for i in counted], method)
    p_adj: list[float | None] = [None] * len(assessed)
    for i, p in zip(counted, adjusted):
        p_adj[i] = float(p)
    return p_adj


def _conclude(rule: Rule, item: _Assessment, p_adj: float | None) -> RuleResult:
    """Status and reason of one member, from its assessment, its Holm-adjusted p (in a family) and the severity."""
    label = _label(item.metric, item.slice)
    if item.state == "missing":
        return _failed(rule, item.metric, item.slice, item.text, item.figures)
    if item.state in ("insufficient", "runs"):
        return RuleResult(
            rule, item.metric, item.slice, "insufficient evidence", item.text, item.figures, item.state == "runs"
        )
    figures = item.figures if p_adj is None else {**item.figures, "p_adj": p_adj}
    reason = f"{label}: {item.text}"
    change_failed = item.change_failed
    if p_adj is not None:
        reason += f"; Holm-adjusted p {format_p(p_adj)}"
        if change_failed and p_adj >= ALPHA:
            change_failed = False  # a breach without significant evidence of a change after adjustment: a warning
            if not item.value_failed and rule.severity == "block":
                reason += (
                    f"; not significant after Holm (p_adj {format_p(p_adj)} >= {ALPHA:g}): a warning, not a failure"
                )
                return RuleResult(rule, item.metric, item.slice, "warn", reason, figures)
            if not item.value_failed:  # a warn family flags only what survives Holm (strict makes flags block)
                reason += f"; not significant after Holm (p_adj {format_p(p_adj)} >= {ALPHA:g}): no warning"
    if item.value_failed or change_failed:
        return _failed(rule, item.metric, item.slice, reason, figures)
    if rule.value_lower is None and rule.value_upper is None and not item.change_checked:
        return RuleResult(
            rule, item.metric, item.slice, "skipped", f"{label}: first run: no baseline, change not evaluated", figures
        )
    return RuleResult(rule, item.metric, item.slice, "pass", reason, figures)


def _failed(rule: Rule, metric: str, slice_: str, reason: str, figures: dict[str, Any]) -> RuleResult:
    """A failure: status "fail" for a block rule, "warn" for a warn rule."""
    return RuleResult(rule, metric, slice_, "fail" if rule.severity == "block" else "warn", reason, figures)


def _label(metric: str, slice_: str) -> str:
    return f"{METRICS[metric].label() if metric in METRICS else metric} on {slice_.removeprefix('category:')}"


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _plain(value: Any) -> float | int | bool:
    """A figure as a plain Python number (numpy scalars do not serialise to JSON)."""
    return value.item() if isinstance(value, np.generic) else value
