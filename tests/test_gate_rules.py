"""analysis.compare.rules: rule files are checked with file, line and field; rules evaluate on hand-built figures as
docs/conventions.md says; the default rule keeps false NO-GOs rare on null data and catches a real regression."""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.compare.rules import (
    DEFAULT_RULE,
    FIGURE_COLUMNS,
    MAX_RULE_BYTES,
    METRICS,
    RuleFileError,
    decide,
    evaluate,
    load_rules,
    read_rules,
    rules_table,
)
from analysis.stats import runs_comparison
from chtn.errors import CHTNError
from tests.conftest import ROOT

# docs/conventions.md's example, read from the page itself: the documented format is the one the code accepts.
EXAMPLE = re.search(r"```toml\n(.*?)```", (ROOT / "docs" / "conventions.md").read_text(encoding="utf-8"), re.S)[1]

GOOD = """\
[[rule]]
metric = "map"
slice = "overall"
change = { direction = "higher_is_better", absolute = -0.01 }
severity = "block"
"""


# --- parsing ------------------------------------------------------------------------------------------------------


def test_the_default_rule_loads_with_one_block_rule_on_overall_map():
    rules = read_rules(None)
    assert rules.source == "default_rule.toml"
    assert rules.text == DEFAULT_RULE.read_text(encoding="utf-8")
    assert rules.sha256 == hashlib.sha256(rules.text.encode()).hexdigest()
    block = [rule for rule in rules.rules if rule.severity == "block"]
    assert [(rule.metric, rule.slice, rule.on, rule.relative, rule.min_runs) for rule in block] == [
        ("map", "overall", "ci_upper", -0.03, 3)
    ]
    assert {rule.min_runs for rule in rules.rules if rule.severity == "warn"} == {1}
    assert all(rule.metric in METRICS for rule in rules.rules)


def test_the_decisions_example_round_trips():
    rules = load_rules(EXAMPLE, "example.toml")
    settings = rules.stats
    assert (settings.resamples, settings.seed, settings.multiplicity, settings.min_effect) == (10000, 0, "holm", 0.01)
    assert rules.text == EXAMPLE and rules.source == "example.toml"
    assert rules.sha256 == hashlib.sha256(EXAMPLE.encode()).hexdigest()
    (rule,) = rules.rules
    assert (rule.index, rule.line, rule.metric, rule.slice) == (0, 7, "map", "overall")
    assert (rule.value_lower, rule.value_upper) == (0.40, None)
    assert (rule.direction, rule.absolute, rule.relative, rule.on) == ("higher_is_better", -0.005, -0.01, "ci_lower")
    assert (rule.severity, rule.min_queries, rule.name) == ("block", 20, "MAP non-inferiority")
    assert load_rules(rules.text, "again.toml").rules == rules.rules


def test_defaults_subtables_and_dotted_keys_parse_alike():
    sub = '[[rule]]\nmetric = "map"\nslice = "category:Ankle boot"\nseverity = "warn"\nname = "boots"\n'
    sub += '[rule.change]\ndirection = "lower_is_better"\nrelative = 0.1\n'
    dotted = '[[rule]]\nmetric = "map"\nslice = "category:Ankle boot"\nseverity = "warn"\nname = "boots"\n'
    dotted += 'change.direction = "lower_is_better"\nchange.relative = 0.1\n'
    (a,), (b,) = load_rules(sub).rules, load_rules(dotted).rules
    assert a == b
    assert (a.slice, a.on, a.min_queries, a.absolute, a.name) == ("category:Ankle boot", "point", 20, None, "boots")
    assert load_rules(GOOD).stats.resamples == 10000  # [stats] is optional


# Each case marks the line the error must name with "# <-"; `field` is the field it must name.
ERRORS = {
    "toml syntax": ('[[rule]]\nmetric = "map"\nslice = # <-\n', None, "not valid TOML"),
    "unknown top-level table": ("[gate] # <-\nx = 1\n" + GOOD, "gate", "unknown top-level key"),
    "unknown top-level key": ('title = "x" # <-\n' + GOOD, "title", "unknown top-level key"),
    "unknown rule key (typo)": (GOOD.replace('severity = "block"', 'severty = "block" # <-'), "severty", "typo"),
    "unknown key in value": (GOOD + "value = { lowr = 0.3 } # <-\n", "value.lowr", "unknown key"),
    "unknown key in change": (GOOD.replace("absolute = -0.01 }", "absolut = -0.01 } # <-"), "change.absolut", "typo"),
    "missing metric": ('[[rule]] # <-\nslice = "overall"\nvalue = { lower = 0.1 }\nseverity = "warn"\n', "metric", ""),
    "missing slice": ('[[rule]] # <-\nmetric = "map"\nvalue = { lower = 0.1 }\nseverity = "warn"\n', "slice", ""),
    "missing severity": ('[[rule]] # <-\nmetric = "map"\nslice = "overall"\nvalue = { lower = 0.1 }\n', "severity", ""),
    "neither value nor change": ('[[rule]] # <-\nmetric = "map"\nslice = "overall"\nseverity = "warn"\n', "change", ""),
    "unknown metric": (GOOD.replace('metric = "map"', 'metric = "mAP" # <-'), "metric", "map_i2t"),
    "unknown slice form": (GOOD.replace('slice = "overall"', 'slice = "categories:Heels" # <-'), "slice", "category:"),
    "empty category name": (GOOD.replace('slice = "overall"', 'slice = "category: " # <-'), "slice", ""),
    "bad severity": (GOOD.replace('severity = "block"', 'severity = "error" # <-'), "severity", "block, warn"),
    "bad direction": (
        GOOD.replace("higher_is_better", "up").replace("-0.01 }", "-0.01 } # <-"),
        "change.direction",
        '"up" is not one of higher_is_better, lower_is_better.',
    ),
    "missing direction": (
        GOOD.replace('direction = "higher_is_better", ', "").replace("-0.01 }", "-0.01 } # <-"),
        "change.direction",
        "never guessed",
    ),
    "bad on": (GOOD.replace("absolute = -0.01 }", 'absolute = -0.01, on = "ci" } # <-'), "change.on", "ci_lower"),
    "non-numeric threshold": (GOOD.replace("-0.01 }", '"-0.01" } # <-'), "change.absolute", "not a number"),
    "nan threshold": (GOOD.replace("absolute = -0.01 }", "relative = nan } # <-"), "change.relative", "finite"),
    "inf bound": (GOOD + "value = { lower = -inf } # <-\n", "value.lower", "finite"),
    "lower above upper": (GOOD + "value = { lower = 0.9, upper = 0.5 } # <-\n", "value", "above upper"),
    "empty value": (GOOD + "value = {} # <-\n", "value", "no bound"),
    "change without threshold": (
        GOOD.replace(", absolute = -0.01 }", " } # <-"),
        "change",
        "neither absolute nor relative",
    ),
    "min_queries zero": (GOOD + "min_queries = 0 # <-\n", "min_queries", ">= 1"),
    "min_queries non-integer": (GOOD + "min_queries = 2.5 # <-\n", "min_queries", "whole number"),
    "min_runs zero": (GOOD + "min_runs = 0 # <-\n", "min_runs", "from 1 to 1000"),
    "min_runs text": (GOOD + 'min_runs = "3" # <-\n', "min_runs", "or 1 to decide between"),
    "resamples too few": ("[stats]\nresamples = 50 # <-\n" + GOOD, "stats.resamples", "from 100 to 1,000,000"),
    "resamples as a huge float": ("[stats]\nresamples = 1e12 # <-\n" + GOOD, "stats.resamples", "1,000,000"),
    "resamples of 2**63 - 1": (
        f"[stats]\nresamples = {2**63 - 1} # <-\n" + GOOD,
        "stats.resamples",
        "not a whole number from 100 to 1,000,000",
    ),
    "integer too large for a float": (
        GOOD.replace("absolute = -0.01 }", f"relative = {10**400} }} # <-"),
        "change.relative",
        "too large",
    ),
    "hexadecimal seed beyond any use": (f"[stats]\nseed = 0x{'f' * 5000} # <-\n" + GOOD, "stats.seed", "too large"),
    "negative seed": ("[stats]\nresamples = 1000\nseed = -1 # <-\n" + GOOD, "stats.seed", ">= 0"),
    "multiplicity": ('[stats]\nmultiplicity = "bh" # <-\n' + GOOD, "stats.multiplicity", "holm"),
    "min_effect text": ('[stats]\nmin_effect = "0.01" # <-\n' + GOOD, "stats.min_effect", "not a number"),
    "min_effect negative": ("[stats]\nmin_effect = -0.01 # <-\n" + GOOD, "stats.min_effect", "from 0 to below 1"),
    "unknown stats key": ("[stats]\nresample = 1000 # <-\n" + GOOD, "stats.resample", "unknown key"),
    "no rules": ("# <- a file with only settings\n[stats]\nseed = 1\n", "rule", "no rules"),
    "rule as a table": ('[rule] # <-\nmetric = "map"\n', "rule", "[[rule]]"),
    "second rule, dotted key": (
        GOOD + '[[rule]]\nmetric = "map"\nslice = "overall"\nseverity = "warn"\nchange.absolute = 0\n'
        "change.direction = 'down' # <-\n",
        "change.direction",
        '"down" is not one of',
    ),
    "second rule, sub-table": (
        GOOD + '[[rule]]\nmetric = "map"\nslice = "overall"\nseverity = "warn"\n[rule.change]\nabsolute = 0\n'
        'direction = "higher" # <-\n',
        "change.direction",
        "not one of",
    ),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_every_rule_file_error_names_the_file_the_line_and_the_field(case):
    text, field, fragment = ERRORS[case]
    line = next(number for number, row in enumerate(text.splitlines(), 1) if "# <-" in row)
    with pytest.raises(RuleFileError) as raised:
        load_rules(text, "bad.toml")
    message = str(raised.value)
    assert isinstance(raised.value, CHTNError)
    assert message.startswith("bad.toml")
    if field is None:  # a syntax error: tomllib's own position, kept
        assert f"(at line {line}," in message
    else:
        assert f"bad.toml, line {line} " in message or message.startswith(f"bad.toml, line {line},")
        assert f'field "{field}"' in message
    assert fragment in message
    if "second rule" in case:
        assert "([[rule]] #2)" in message


def test_read_rules_keeps_the_text_verbatim_and_explains_a_missing_file(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_bytes(GOOD.replace("\n", "\r\n").encode())
    rules = read_rules(path)
    assert rules.text == GOOD.replace("\n", "\r\n") and rules.source == str(path)
    assert rules.rules[0].line == 1
    with pytest.raises(RuleFileError, match="no such rule file"):
        read_rules(tmp_path / "absent.toml")
    (tmp_path / "latin.toml").write_bytes("# caf\xe9\n".encode("latin-1") + GOOD.encode())
    with pytest.raises(RuleFileError, match="UTF-8"):
        read_rules(tmp_path / "latin.toml")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a = " + "[" * 5000 + "]" * 5000 + "\n" + GOOD, "nested too deeply"),
        (GOOD + "value = " + "{ a = " * 3000 + "1" + " }" * 3000 + "\n", "nested too deeply"),
        (GOOD + "value = { lower = " + "1" * 5000 + " }\n", "bad.toml, line 6: a number has too many digits"),
    ],
    ids=["nested arrays", "nested inline tables", "5000-digit integer"],
)
def test_what_tomllib_cannot_parse_is_a_rule_file_error(text, fragment):
    with pytest.raises(RuleFileError, match=fragment):
        load_rules(text, "bad.toml")


def test_only_a_rule_file_of_bounded_size_is_read(tmp_path):  # pipes and devices: test_robustness, in a subprocess
    with pytest.raises(RuleFileError, match="is a folder, not a regular file"):
        read_rules(tmp_path)
    huge = tmp_path / "huge.toml"
    huge.write_text(GOOD + "#" * MAX_RULE_BYTES)
    with pytest.raises(RuleFileError, match=f"larger than {MAX_RULE_BYTES:,} bytes"):
        read_rules(huge)


_keys = st.sampled_from(
    ["stats", "rule", "resamples", "seed", "metric", "slice", "severity", "value", "change", "lower", "upper"]
    + ["direction", "absolute", "relative", "on", "min_queries", "name"]
)
_scalars = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["map", "overall", "category:*", "block", "warn", "higher_is_better", "point", "holm", ""]),
    st.text(max_size=8),
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4), max_leaves=12
)


def _toml(value: object) -> str:
    """A value written as TOML (inline tables and arrays), hypothesis's raw material for rule files."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    return str(value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stats=st.dictionaries(_keys, _values, max_size=3),
    rules=st.lists(st.dictionaries(_keys, _values, max_size=6), max_size=3),
    depth=st.one_of(st.none(), st.integers(1, 3000)),
)
def test_any_rule_file_is_rules_or_a_rule_file_error(stats, rules, depth):
    lines = ["[stats]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in stats.items())]
    for rule in rules:
        lines.append("[[rule]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in rule.items()))
    if depth is not None:
        lines.append("deep = " + "[" * depth + "]" * depth + "\n")
    try:
        load_rules("".join(lines), "any.toml")
    except RuleFileError as exc:
        assert str(exc).startswith("any.toml")


# --- evaluation ---------------------------------------------------------------------------------------------------


def _row(metric="map", slice_="overall", baseline=0.8, delta=0.0, ci=None, p=1.0, n=400, insufficient=False):
    """One row of the comparison's figures; the CI defaults to delta +- 0.01."""
    low, high = ci if ci is not None else (delta - 0.01, delta + 0.01)
    return {
        "metric": metric,
        "slice": slice_,
        "n": n,
        "baseline": baseline,
        "candidate": baseline + delta if not math.isnan(baseline) else 0.8,
        "delta": delta,
        "relative": delta / baseline,
        "ci_low": low,
        "ci_high": high,
        "p_value": p,
        "insufficient": insufficient,
    }


def _rule(metric="map", slice_="overall", severity="block", **parts: str) -> str:
    """A rule's TOML; `min_runs = 1` unless given, so that one comparison's figures are checked (not a recipe's)."""
    body = "".join(f"{key} = {value}\n" for key, value in {"min_runs": "1", **parts}.items())
    return f'[[rule]]\nmetric = "{metric}"\nslice = "{slice_}"\nseverity = "{severity}"\n{body}'


def _run(text, rows, categories=(), has_baseline=True):
    return evaluate(load_rules(text), pd.DataFrame(rows, columns=FIGURE_COLUMNS), categories, has_baseline)


def _status(text, row, **kw):
    (result,) = _run(text, [row], **kw)
    return result.status


def test_value_bounds_compare_the_candidates_point_value():
    text = _rule(value="{ lower = 0.4, upper = 0.9 }")
    assert _status(text, _row(baseline=0.5)) == "pass"
    (low,) = _run(text, [_row(baseline=0.3)])
    assert low.status == "fail" and low.blocking and "below the lower bound 0.4" in low.reason
    assert _status(text, _row(baseline=0.95)) == "fail"


@pytest.mark.parametrize(
    ("metric", "change", "delta", "expected"),
    [
        ("map", '{ direction = "higher_is_better", absolute = -0.01 }', -0.005, "pass"),
        ("map", '{ direction = "higher_is_better", absolute = -0.01 }', -0.02, "fail"),
        ("map", '{ direction = "higher_is_better", relative = -0.03 }', -0.02, "pass"),  # -2.5% of 0.8
        ("map", '{ direction = "higher_is_better", relative = -0.03 }', -0.03, "fail"),  # -3.75%
        ("map", '{ direction = "higher_is_better", absolute = -0.05, relative = -0.03 }', -0.03, "fail"),  # both hold
        ("pair_median_rank_i2t", '{ direction = "lower_is_better", absolute = 1.0 }', 0.5, "pass"),
        ("pair_median_rank_i2t", '{ direction = "lower_is_better", absolute = 1.0 }', 2.0, "fail"),
        ("pair_median_rank_i2t", '{ direction = "lower_is_better", relative = 0.1 }', 0.2, "pass"),  # +5% of 4
        ("pair_median_rank_i2t", '{ direction = "lower_is_better", relative = 0.1 }', 1.0, "fail"),  # +25%
        ("pair_median_rank_i2t", '{ direction = "higher_is_better", absolute = 0 }', 1.0, "pass"),  # asked for
    ],
)
def test_absolute_and_relative_changes_in_both_directions(metric, change, delta, expected):
    baseline = 4.0 if metric.startswith("pair_median") else 0.8
    assert _status(_rule(metric, change=change), _row(metric, baseline=baseline, delta=delta)) == expected


def test_point_and_ci_lower_give_different_verdicts_on_the_same_figures():
    row = _row(delta=-0.002, ci=(-0.012, 0.008))
    point = _rule(change='{ direction = "higher_is_better", absolute = -0.005, on = "point" }')
    bound = _rule(change='{ direction = "higher_is_better", absolute = -0.005, on = "ci_lower" }')
    assert _status(point, row) == "pass"
    (result,) = _run(bound, [row])
    assert result.status == "fail" and "CI lower bound -0.012 < -0.005 allowed" in result.reason
    # lower_is_better compares the upper bound: a median rank whose CI reaches +1.5 breaches a margin of +1
    rank = _rule("pair_median_rank_t2i", change='{ direction = "lower_is_better", absolute = 1, on = "ci_lower" }')
    (result,) = _run(rank, [_row("pair_median_rank_t2i", baseline=3.0, delta=0.0, ci=(-1.5, 1.5))])
    assert result.status == "fail" and "CI upper bound +1.500 > 1 allowed" in result.reason


def test_the_relative_change_of_a_ci_bound_divides_by_the_baseline():
    text = _rule(change='{ direction = "higher_is_better", relative = -0.03, on = "ci_lower" }')
    (result,) = _run(text, [_row(baseline=0.5, delta=0.0, ci=(-0.016, 0.01))])  # -3.2% of 0.5
    assert result.status == "fail" and "-3.2% < -3% allowed" in result.reason
    assert _status(text, _row(baseline=0.8, delta=0.0, ci=(-0.016, 0.01))) == "pass"  # -2% of 0.8


def test_missing_figures_fail_closed_whatever_the_severity():
    block = _rule("map_t2i", change='{ direction = "higher_is_better", absolute = -0.01 }')
    (result,) = _run(block, [_row("map_i2t")])
    assert result.status == "fail" and result.blocking
    assert result.reason.startswith("missing:") and "(fails closed)" in result.reason
    (warned,) = _run(block.replace('"block"', '"warn"'), [_row("map_i2t")])
    assert warned.status == "warn" and not warned.blocking and "fails closed" in warned.reason
    nan = _row()
    nan["candidate"] = float("nan")
    assert _status(_rule(value="{ lower = 0.1 }"), nan) == "fail"
    no_ci = _row(ci=(float("nan"), float("nan")))
    assert _status(_rule(change='{ direction = "higher_is_better", absolute = 0, on = "ci_lower" }'), no_ci) == "fail"
    everywhere = _rule(slice_="category:*", change='{ direction = "higher_is_better", absolute = -0.01 }')
    (empty,) = _run(everywhere, [_row()], categories=[])
    assert empty.status == "fail" and "no categories" in empty.reason
    named = _run(everywhere.replace("category:*", "category:Heels"), [_row()], categories=["Heels"])
    assert [(r.metric, r.slice, r.status) for r in named] == [
        ("map_i2t", "category:Heels", "fail"),
        ("map_t2i", "category:Heels", "fail"),
    ]


def test_insufficient_evidence_never_blocks_even_strict():
    text = _rule(change='{ direction = "higher_is_better", absolute = -0.01 }', min_queries="30")
    results = _run(text, [_row(delta=-0.5, n=29)])
    assert [r.status for r in results] == ["insufficient evidence"]
    assert "29 queries < 30 required" in results[0].reason
    flagged = _run(text, [_row(delta=-0.5, n=400, insufficient=True)])
    assert flagged[0].status == "insufficient evidence"
    for strict in (False, True):
        assert decide(results + flagged, strict=strict).verdict == "GO"


def test_without_a_baseline_changes_are_skipped_and_value_bounds_still_apply():
    change = '{ direction = "higher_is_better", absolute = -0.01 }'
    (skipped,) = _run(_rule(change=change), [_row(delta=-0.5)], has_baseline=False)
    assert skipped.status == "skipped" and "first run" in skipped.reason
    (nan,) = _run(_rule(change=change), [_row(baseline=float("nan"))])
    assert nan.status == "skipped" and "first run" in nan.reason
    both = _rule(change=change, value="{ lower = 0.5 }")
    (passed,) = _run(both, [_row(baseline=0.8, delta=-0.1)], has_baseline=False)  # candidate 0.7
    assert passed.status == "pass" and "first run" in passed.reason
    (failed,) = _run(both, [_row(baseline=0.2)], has_baseline=False)
    assert failed.status == "fail"
    assert decide([skipped, nan], strict=True).verdict == "GO"


def _family(p_heels: float) -> list:
    """A block rule over every category: Heels breaches the margin with p_heels; Bags and Coats do not."""
    text = _rule("map_i2t", "category:*", change='{ direction = "higher_is_better", absolute = -0.02, on = "point" }')
    rows = [
        _row("map_i2t", "category:Heels", delta=-0.04, p=p_heels, n=60),
        _row("map_i2t", "category:Bags", delta=0.0, p=0.5, n=60),
        _row("map_i2t", "category:Coats", delta=0.01, p=0.8, n=60),
        _row("map_i2t", "category:Tiny", delta=-0.3, p=0.001, n=5),  # insufficient: no part in the adjustment
    ]
    return _run(text, rows, categories=["Heels", "Bags", "Coats", "Tiny"])


def test_holm_turns_a_breach_significant_only_before_adjustment_into_a_warning():
    heels, bags, coats, tiny = _family(p_heels=0.03)
    assert heels.figures["p_adj"] == pytest.approx(0.09)  # 3 x 0.03: three counted members
    assert heels.status == "warn" and not heels.blocking
    assert "not significant after Holm (p_adj 0.090" in heels.reason
    assert (bags.status, coats.status, tiny.status) == ("pass", "pass", "insufficient evidence")
    assert "p_adj" not in tiny.figures
    assert decide([heels, bags, coats, tiny]).verdict == "GO"


def test_holm_lets_a_strongly_significant_breach_fail():
    heels, *_ = results = _family(p_heels=0.001)
    assert heels.status == "fail" and heels.blocking and "Holm-adjusted p 0.003" in heels.reason
    decision = decide(results)
    assert (decision.verdict, decision.exit_code) == ("NO-GO", 1)
    assert decision.summary == "NO-GO: 1 block rule fails (MAP I->T on Heels); 0 warnings"


def _tolerated_family(delta: float, p: float) -> list:
    """The default rule's per-category warn family: Formal Shoes T->I loses `delta` with raw p `p`."""
    text = _rule("map", "category:*", "warn", change='{ direction = "higher_is_better", absolute = -0.05 }')
    rows = [_row("map_t2i", "category:Formal Shoes", delta=delta, ci=(delta - 0.013, delta + 0.015), p=p, n=20)]
    rows += [_row(m, f"category:{c}", delta=0.0, p=1.0, n=20) for c in ("Heels", "Bags") for m in ("map_i2t",)]
    rows += [_row("map_t2i", f"category:{c}", delta=0.0, p=1.0, n=20) for c in ("Heels", "Bags")]
    rows += [_row("map_i2t", "category:Formal Shoes", delta=0.0, p=1.0, n=20)]
    return _run(text, rows, categories=["Formal Shoes", "Heels", "Bags"])


def test_a_significant_loss_within_tolerance_is_named_in_the_verdict():
    results = _tolerated_family(delta=-0.040, p=0.0005)
    assert {r.status for r in results} == {"pass"}  # -0.040 is within the -0.05 tolerance
    decision = decide(results)
    assert decision.verdict == "GO" and [r.slice for r in decision.tolerated] == ["category:Formal Shoes"]
    assert decision.summary == (
        "GO: no block rule fails; 0 warnings; 1 significant loss within tolerance: MAP T->I on Formal Shoes -0.040 "
        "[-0.053, -0.025], Holm p 0.003 (tolerance -0.05)"
    )


@pytest.mark.parametrize(
    ("delta", "p", "min_effect"),
    [(-0.040, 0.2, 0.01), (-0.005, 0.0001, 0.01), (-0.040, 0.0005, 0.05), (0.040, 0.0005, 0.01)],
    ids=["not significant after Holm", "below the minimum effect", "a larger minimum effect", "a gain"],
)
def test_only_significant_practical_losses_are_named(delta, p, min_effect):
    decision = decide(_tolerated_family(delta=delta, p=p), min_effect=min_effect)
    assert decision.tolerated == [] and decision.summary == "GO: no block rule fails; 0 warnings"


def test_p_values_below_a_thousandth_print_as_such_in_reasons():
    heels, *_ = _family(p_heels=0.0001)
    assert "Holm-adjusted p < 0.001" in heels.reason and "0.000" not in heels.reason


def test_a_single_slice_rule_decides_by_the_comparison_alone():
    text = _rule(change='{ direction = "higher_is_better", absolute = -0.02, on = "point" }')
    (result,) = _run(text, [_row(delta=-0.04, p=0.5)])
    assert result.status == "fail" and "p_adj" not in result.figures


def test_strict_turns_a_warning_into_no_go():
    text = _rule(change='{ direction = "higher_is_better", absolute = -0.01 }', severity="warn")
    results = _run(text, [_row(delta=-0.05)])
    assert [r.status for r in results] == ["warn"]
    assert decide(results).verdict == "GO" and decide(results).summary == "GO: no block rule fails; 1 warning"
    strict = decide(results, strict=True)
    assert (strict.verdict, strict.exit_code, len(strict.warnings)) == ("NO-GO", 1, 1)
    assert "strict" in strict.summary


def _identical(categories):
    """Figures of a checkpoint compared with itself: every change 0, CI [0, 0], p = 1."""
    overall = [m for m in METRICS if not m.endswith(("_i2t", "_t2i"))] + [m for m in METRICS if m.endswith("_i2t")]
    overall += [m for m in METRICS if m.endswith("_t2i")]
    directional = [m for m in METRICS if m.endswith(("_i2t", "_t2i"))]
    rows = [_row(m, "overall", ci=(0.0, 0.0)) for m in overall]
    rows += [_row(m, f"category:{c}", ci=(0.0, 0.0), n=40) for c in categories for m in directional]
    return pd.DataFrame(rows, columns=FIGURE_COLUMNS).assign(runs_a=3, runs_b=3)  # recipes: 3 runs per side


def test_identical_checkpoints_are_go_under_the_default_rule():
    categories = ["Heels", "Ankle boot", "Bags"]
    results = evaluate(read_rules(None), _identical(categories), categories)
    assert {r.status for r in results} == {"pass"}
    assert len(results) == 4 + 2 * len(categories)
    decision = decide(results, strict=True)
    assert (decision.verdict, decision.exit_code, decision.blocking, decision.warnings) == ("GO", 0, [], [])
    table = rules_table(results)
    assert list(table.columns) == ["rule", "line", "metric", "slice", "severity", "status", "reason"]
    assert table["line"].iloc[0] == read_rules(None).rules[0].line


# --- the default rule on simulated comparisons --------------------------------------------------------------------

SEED_SD = 0.0074  # measured: SD of the sample no-source recipe's MAP over 8 training seeds (issue 21)


def _default_verdict(runs: int, loss: float, seed: int, queries: int = 400) -> str:
    """The default rule's verdict on one simulated recipe comparison, with training-run noise and query noise: each
    run shifts every query of its side by a seed effect (SD `SEED_SD`) on top of per-query AP noise (SD 0.12, as
    measured between sample checkpoints), baseline MAP ~ 0.84, the candidate's recipe `loss` lower. Only `map` on
    overall is in the figures: the other rules then fail closed as warnings, which never change a non-strict verdict.
    """
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.68, 1.0, queries)
    side = lambda shift: [truth + shift + rng.normal(0, SEED_SD) + rng.normal(0, 0.12, queries) for _ in range(runs)]  # noqa: E731
    c = runs_comparison(side(0.0), side(-loss))
    row = _row(baseline=c.mean_a, delta=c.delta, ci=(c.ci_low, c.ci_high), p=c.p_value, n=queries)
    row.update(candidate=c.mean_b, relative=c.relative, runs_a=runs, runs_b=runs)
    results = evaluate(read_rules(None), pd.DataFrame([row]), [])
    return decide(results).verdict


def test_the_default_rule_on_one_run_per_side_makes_no_recipe_decision():
    assert _default_verdict(1, 0.0, 0) == "INSUFFICIENT EVIDENCE"
    assert _default_verdict(2, 0.2, 0) == "INSUFFICIENT EVIDENCE"  # even a huge loss: two runs hold no decision
    results = evaluate(read_rules(None), pd.DataFrame([{**_row(delta=-0.2), "runs_a": 1, "runs_b": 1}]), [])
    (block,) = [r for r in results if r.rule.severity == "block"]
    assert block.status == "insufficient evidence" and block.too_few_runs
    assert "insufficient evidence for a recipe decision: 1 run of A and 1 of B" in block.reason
    decision = decide(results)
    assert (decision.verdict, decision.exit_code) == ("INSUFFICIENT EVIDENCE", 2)
    assert "set min_runs = 1" in decision.summary


@pytest.mark.slow
def test_the_default_rule_rarely_says_no_go_on_same_recipe_runs():
    """A/A with 3 runs per side: what the rule file promises (0% simulated; at most 2.5% for a loss at the margin)."""
    verdicts = [_default_verdict(3, 0.0, seed) for seed in range(300)]
    assert verdicts.count("NO-GO") / len(verdicts) <= 0.01
    at_margin = [_default_verdict(3, 0.025, seed) for seed in range(300)]
    assert at_margin.count("NO-GO") / len(at_margin) <= 0.05


@pytest.mark.slow
def test_the_default_rule_catches_a_loss_of_three_margins_with_three_runs():
    verdicts = [_default_verdict(3, 0.075, seed) for seed in range(100)]
    assert verdicts.count("NO-GO") / len(verdicts) >= 0.95


def test_min_runs_one_decides_between_two_checkpoints():
    text = _rule(change='{ direction = "higher_is_better", absolute = -0.02 }', min_runs="1")
    assert _status(text, _row(delta=-0.04)) == "fail" and _status(text, _row(delta=0.0)) == "pass"


def test_ci_upper_fails_only_when_the_whole_interval_is_beyond_the_threshold():
    text = _rule(change='{ direction = "higher_is_better", absolute = -0.02, on = "ci_upper" }', min_runs="1")
    assert _status(text, _row(delta=-0.03, ci=(-0.05, -0.01))) == "pass"  # the interval reaches within -0.02
    assert _status(text, _row(delta=-0.04, ci=(-0.06, -0.025))) == "fail"
    ranks = _rule(
        "pair_median_rank_t2i", change='{ direction = "lower_is_better", absolute = 1, on = "ci_upper" }', min_runs="1"
    )
    assert _status(ranks, _row("pair_median_rank_t2i", delta=3, ci=(0.5, 5))) == "pass"
    assert _status(ranks, _row("pair_median_rank_t2i", delta=3, ci=(1.5, 5))) == "fail"
