"""`chtn compare`, the CI gate, on the sample: exit 0 GO, 1 NO-GO, 2 invalid input or rule file, 3 internal error;
the report, the JSON model card and the BLESSED / NOT_BLESSED marker."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chtn.cli import main
from tests.conftest import CHECKPOINTS, PAIRS, recipe_runs

pytestmark = pytest.mark.slow  # each run ranks the sample twice and resamples 10,000 times per slice

FASHION, NO_SOURCE = (str(CHECKPOINTS / f"{n}.safetensors") for n in ("chtn_fashion_source", "chtn_no_source"))


def _compare(baseline: str | list[str], candidate: str | list[str], out, *extra: str) -> int:
    runs = [[side] if isinstance(side, str) else side for side in (baseline, candidate)]
    return main(["compare", "--baseline", *runs[0], "--candidate", *runs[1], "--data", str(PAIRS), "--out", str(out),
                 *extra])  # fmt: skip


def test_one_checkpoint_per_side_makes_no_recipe_decision(tmp_path, capsys):
    """The default block rule needs 3 training runs per side: with one, the gate says neither GO nor NO-GO (exit 2),
    and every output says the figures compare these two checkpoints, not their recipes."""
    assert _compare(FASHION, NO_SOURCE, tmp_path) == 2
    out = capsys.readouterr().out
    assert "INSUFFICIENT EVIDENCE: no recipe decision" in out and "One checkpoint per side" in out
    assert (tmp_path / "NOT_BLESSED").exists() and not (tmp_path / "BLESSED").exists()
    document = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    statistics = document["quantitative_analysis"]["statistics"]
    assert statistics["training_runs"] == {"baseline": 1, "candidate": 1}
    assert statistics["compares"].startswith("One checkpoint per side: the figures compare these two checkpoints")
    units = {m["unit"] for m in document["quantitative_analysis"]["performance_metrics"] if m["slice"] == "overall"}
    assert units == {"clusters", "queries"}  # means by category cluster, median ranks by query
    assert document["gate"]["verdict"] == "INSUFFICIENT EVIDENCE" and document["gate"]["exit_code"] == 2


def test_a_recipe_against_itself_is_go_with_zero_change(tmp_path, capsys):
    runs = recipe_runs("chtn_fashion_source")
    assert _compare(runs, runs, tmp_path) == 0
    assert "GO: no block rule fails" in capsys.readouterr().out
    assert (tmp_path / "BLESSED").exists() and not (tmp_path / "NOT_BLESSED").exists()
    document = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))  # strict JSON: no NaN
    changes = [m["change"] for m in document["quantitative_analysis"]["performance_metrics"]]
    assert changes and all(c == 0 for c in changes)
    assert document["gate"]["verdict"] == "GO" and document["gate"]["rule_file"] == "default_rule.toml"
    assert document["quantitative_analysis"]["statistics"]["resamples"] == 10000


def test_losing_the_source_recipe_is_no_go_and_the_gain_is_go(tmp_path, capsys):
    (tmp_path / "BLESSED").write_text("from an earlier run")
    fashion, no_source = recipe_runs("chtn_fashion_source"), recipe_runs("chtn_no_source")
    assert _compare(fashion, no_source, tmp_path) == 1
    out = capsys.readouterr().out
    assert "fail: MAP on overall" in out and "NO-GO: 1 block rule fails" in out
    assert "3 training runs of A against 3 of B" in out
    assert (tmp_path / "NOT_BLESSED").exists() and not (tmp_path / "BLESSED").exists()
    document = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    overall = next(
        m
        for m in document["quantitative_analysis"]["performance_metrics"]
        if (m["type"], m["slice"]) == ("map", "overall")
    )
    ci = overall["confidence_interval"]
    assert ci["lower_bound"] < overall["change"] < ci["upper_bound"] < 0 and overall["unit"] == "runs"
    assert document["quantitative_analysis"]["queries"]["broken"] > 0
    assert _compare(no_source, fashion, tmp_path / "gain") == 0


def test_strict_turns_a_warning_into_no_go(tmp_path):
    rule = tmp_path / "rule.toml"
    rule.write_text(
        '[stats]\nresamples = 200\n\n[[rule]]\nmetric = "map"\nslice = "overall"\nvalue = { lower = 0.99 }\n'
        'severity = "warn"\n'
    )
    assert _compare(FASHION, FASHION, tmp_path / "lenient", "--rule", str(rule)) == 0
    assert _compare(FASHION, FASHION, tmp_path / "strict", "--rule", str(rule), "--strict") == 1
    assert (tmp_path / "strict" / "NOT_BLESSED").read_text().startswith("NO-GO")


def test_the_review_database_gives_the_report_its_decision_log(tmp_path):
    """`chtn compare --review-db` opens the decisions schema too: on a database `chtn review` made (review's tables
    only) it adds the decisions, and a decision recorded on this comparison appears in the next report."""
    from analysis.compare import decisions
    from analysis.review.store import ReviewStore

    rule = tmp_path / "rule.toml"
    rule.write_text(
        '[stats]\nresamples = 200\n\n[[rule]]\nmetric = "map"\nslice = "overall"\nvalue = { lower = -1 }\n'
        'severity = "block"\n'
    )
    database = tmp_path / "review.sqlite"
    ReviewStore(database).close()
    assert _compare(FASHION, NO_SOURCE, tmp_path / "first", "--rule", str(rule), "--review-db", str(database)) == 0
    document = json.loads((tmp_path / "first" / "comparison.json").read_text(encoding="utf-8"))
    assert document["decision_log"] == []
    store = ReviewStore(database, also=(decisions.SCHEMA,))
    assert store.schema_versions() == {"review": 3, "decisions": 1}
    details = document["model_details"]
    record = dict(dataset=details["dataset"]["fingerprint"], baseline=details["baseline"]["content_hash"])
    record |= dict(candidate=details["candidate"]["content_hash"], baseline_name="A", candidate_name="B")
    record |= dict(decision="NO-GO", override_reason="", deciders="ada", rationale="Heels", rule_source="r")
    record |= dict(rule_text="", rule_sha256="0" * 64, resamples=200, seed=0, gate="GO", rules=[], review_counts={})
    decisions.save_decision(store, **record, code_version="0.1")
    store.close()
    assert _compare(FASHION, NO_SOURCE, tmp_path / "second", "--rule", str(rule), "--review-db", str(database)) == 0
    document = json.loads((tmp_path / "second" / "comparison.json").read_text(encoding="utf-8"))
    assert [(d["decision"], d["rationale"]) for d in document["decision_log"]] == [("NO-GO", "Heels")]


@pytest.mark.parametrize(
    "rule_text, message",
    [
        ('[[rule]]\nmetric = "map"\nslice = "overall"\nseverty = "block"\n', 'line 4 ([[rule]] #1), field "severty"'),
        (
            '[[rule]]\nmetric = "mAP"\nslice = "overall"\nseverity = "block"\nvalue = { lower = 0.5 }\n',
            'field "metric"',
        ),
        ("[[rule]\n", "line 1"),
    ],
)
def test_a_bad_rule_file_is_exit_2_naming_the_line_and_field(tmp_path, capsys, rule_text, message):
    rule = tmp_path / "bad.toml"
    rule.write_text(rule_text)
    assert _compare(FASHION, NO_SOURCE, tmp_path / "out", "--rule", str(rule)) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and message in err
    assert not (tmp_path / "out" / "BLESSED").exists() and not (tmp_path / "out" / "NOT_BLESSED").exists()


def test_bad_input_is_exit_2_and_a_crash_is_exit_3(tmp_path, capsys, monkeypatch):
    assert _compare(FASHION, str(tmp_path / "missing.safetensors"), tmp_path / "out") == 2
    assert "missing.safetensors" in capsys.readouterr().err
    assert _compare(FASHION, NO_SOURCE, tmp_path / "o", "--rule", str(tmp_path / "none.toml")) == 2

    import analysis.compare.commands

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(analysis.compare.commands, "compare_checkpoints", broken)  # an internal error, injected
    assert _compare(FASHION, NO_SOURCE, tmp_path / "crash") == 3
    assert "internal error" in capsys.readouterr().err


def write_small_split(folder: Path, per_category: int, categories: int) -> tuple[Path, int]:
    """A manifest of the sample's first `per_category` test rows of its first `categories` categories (images by
    absolute path): (its path, its number of rows)."""
    rows = [r for r in csv.DictReader(PAIRS.open(newline="", encoding="utf-8")) if r["split"] == "test"]
    picked, seen = [], {}
    for row in rows:
        if seen.get(row["label"], 0) < per_category and (row["label"] in seen or len(seen) < categories):
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            picked.append({**row, "image": str((PAIRS.parent / row["image"]).resolve())})
    manifest = folder / "small.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(picked[0]))
        writer.writeheader()
        writer.writerows(picked)
    return manifest, len(picked)


@pytest.mark.parametrize("per_category, categories", [(2, 5), (20, 1)], ids=["10 queries", "one category"])
def test_a_split_without_evidence_is_exit_2_insufficient_evidence_not_go(tmp_path, capsys, per_category, categories):
    manifest, n = write_small_split(tmp_path, per_category, categories)
    code = main(["compare", "--baseline", NO_SOURCE, "--candidate", FASHION, "--data", str(manifest),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and err.count("insufficient evidence") == 1 and "Traceback" not in err
    assert f"{n} queries in {categories} categor" in err and "GO" not in out
    assert not (tmp_path / "out" / "BLESSED").exists()
