"""Validation on a flawed copy of real sample rows (tests/flaws.py): every flaw found, named and with its fix;
every entry point (CLI and dashboard) checks only the rows it uses and stops or skips them the same way."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from analysis import workspace as ws
from chtn.checkpoint import load_checkpoint
from chtn.cli import main
from chtn.data import load_pairs
from chtn.errors import CHTNError, DataValidationError
from chtn.images import open_rgb
from chtn.validation import ValidationReport, load_checked_pairs, validate_pairs
from tests.conftest import CHECKPOINTS, PAIRS
from tests.flaws import build_flawed, build_flawed_wikipedia

CKPT = CHECKPOINTS / "chtn_fashion_source.safetensors"
WARNINGS = {"same text in train and test", "same image twice"}


@pytest.fixture(scope="module")
def flawed(tmp_path_factory) -> tuple[str, dict[str, list[str]]]:
    folder = tmp_path_factory.mktemp("flawed")
    return str(folder / "pairs.csv"), build_flawed(folder)


@pytest.fixture(scope="module")
def report(flawed) -> ValidationReport:
    path, _ = flawed
    labels = load_checkpoint(CKPT).label_names
    return validate_pairs(load_pairs(path, labels), labels)


@pytest.fixture(scope="module")
def table(report) -> pd.DataFrame:
    return report.table()


def _ids(flaws: dict[str, list[str]], split: str | None = None, path: str | None = None) -> set[str]:
    """Ids of the invalid rows (warnings excluded); with `split`, those of that split (a split's check gives its rows
    the whole dataset's verdict)."""
    ids = {i for problem, found in flaws.items() if problem not in WARNINGS for i in found}
    if split is None:
        return ids
    data = load_pairs(path)
    return {i for i, s in zip(data.ids, data.splits) if s == split and i in ids}


def test_every_planted_flaw_is_found_with_its_severity_and_nothing_else(flawed, table):
    _, flaws = flawed
    assert set(table.problem) == set(flaws)  # no false alarm on the 30 clean real rows
    for problem, ids in flaws.items():
        found = table[table.problem == problem]
        assert sorted(found.id) == sorted(ids), problem
        assert set(found.severity) == {"warning" if problem in WARNINGS else "invalid"}
        assert (found.fix.str.len() > 10).all()


@pytest.mark.parametrize(
    "problem, position, detail, fix",
    [
        ("missing image file", 0, "gone-0.jpg", "restore the file"),
        ("missing image file", 3, "(near match: '{id}.JPG')", "rename it to '{id}.jpg'"),  # case
        ("missing image file", 4, "'{id}.jpg ' (near match: '{id}.jpg')", "point the row at '{id}.jpg'"),  # space
        ("unreadable image file", 0, "image file is truncated", "complete JPEG or PNG"),
        ("image too large", 0, "8000x8000 = 64,000,000 pixels", "at most 50,000,000 pixels"),
        ("image too large", 1, "decompression bomb", "at most 50,000,000 pixels"),
        ("image path is a folder", 0, "a-folder.jpg", "an image file inside that folder"),
        ("text holds NUL bytes", 0, "(1 NUL)", "remove the NUL"),
        ("unknown label", 0, "'Capes'", "'Watches'"),  # the checkpoint's labels are listed
        ("same image, different labels", 1, "(Heels): same image as id", "keep one label"),
        ("pair split across train/test", 0, "is in both (test id {id}, train id", "move it to train"),
        ("pair split across train/val", 0, "is in both (val id {id}, train id", "validation scores"),
        ("same image twice", 0, "(Tshirts): also id", "keep one row per image"),
        ("same text in train and test", 0, "Peter England Men Formal Black Belt", "repeated titles"),
    ],
)
def test_each_flaw_is_named_with_its_fix(flawed, report, table, problem, position, detail, fix):
    """Each offender's detail and fix, in the problems table and in the text `validate --show all` prints."""
    item = flawed[1][problem][position]
    row = table[(table.problem == problem) & (table.id == item)].iloc[0]
    assert detail.format(id=item) in row.detail and fix.format(id=item) in row.fix
    assert row.detail in report.summary(show=None) and row.fix in report.summary(show=None)


def test_truncated_jpeg_passes_verify_but_not_the_training_opener(flawed, table):
    """Why validation decodes fully with `open_rgb`: PIL's verify() accepts the truncated file."""
    path, flaws = flawed
    data = load_pairs(path)
    truncated = data.image_paths[data.ids.index(flaws["unreadable image file"][0])]
    with Image.open(truncated) as image:
        image.verify()
    image_problems = {"missing image file", "unreadable image file", "image too large", "image path is a folder"}
    flagged = set(table[table.problem.isin(image_problems)].id)
    for item, image in zip(data.ids, data.image_paths):  # validate flags exactly what training cannot open
        if item in flagged:
            with pytest.raises(CHTNError):
                open_rgb(image)
        else:
            open_rgb(image)


def test_text_not_utf8_in_wikipedia_layout_is_a_row_problem(tmp_path, capsys):
    item = build_flawed_wikipedia(tmp_path)
    report = validate_pairs(load_pairs(tmp_path))
    assert list(report.problems) == ["text not UTF-8"] and len(report.bad_rows) == 1
    assert report.problems["text not UTF-8"][0].item_id == item and "texts/<id>.txt" in report.summary()
    assert main(["validate", "--data", str(tmp_path)]) == 1
    assert f"text not UTF-8: 1 — id {item} (2 undecodable bytes)" in capsys.readouterr().out


def test_an_image_also_in_another_category_folder_is_named_with_its_own_fix(tmp_path, capsys):
    """Wikipedia layout: a byte-identical copy of a Watches item's image in images/Belts/ (named by no row) is a
    warning whose fix names that item's two files and its list line's category index; a different picture of the
    same name is not a copy."""
    build_flawed_wikipedia(tmp_path)
    data = load_pairs(tmp_path)
    row = data.labels.index("Watches")
    image = data.image_paths[row]
    shutil.copyfile(image, tmp_path / "images" / "Belts" / image.name)
    belt = data.image_paths[data.labels.index("Belts")]
    shutil.copyfile(belt, tmp_path / "images" / "Watches" / f"x{belt.name}")  # another name: not this check
    report = validate_pairs(data)
    (found,) = report.warnings["image in two category folders"]
    assert found.item_id == data.ids[row] and f"{image.name} is in images/Watches/" in found.detail
    assert found.fix == (
        f"if {data.ids[row]} is Watches, delete images/Belts/{image.name}; if it is Belts, set its category to "
        f"2 (Belts) in {data.splits[row]}set_txt_img_cat.list and delete images/Watches/{image.name}"
    )
    assert f"fix: {found.fix}" in report.summary()  # what `validate` prints names it too
    assert report.problems.keys() == {"text not UTF-8"}  # a warning: the row stays valid
    Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / "Belts" / image.name)  # same name, other picture
    assert "image in two category folders" not in validate_pairs(load_pairs(tmp_path)).warnings


def test_show_and_problems_csv_list_every_offender(flawed, tmp_path, capsys):
    path, flaws = flawed
    missing = flaws["missing image file"]
    assert main(["validate", "--data", path, "--show", "2"]) == 1
    out = capsys.readouterr().out
    assert "missing image file: 5 — " in out and "(+3 more)" in out and "gone-2.jpg" not in out
    csv_path = tmp_path / "problems.csv"
    assert main(["validate", "--data", path, "--show", "all", "--problems-csv", str(csv_path)]) == 1
    out = capsys.readouterr().out
    assert all(f"gone-{k}.jpg" in out for k in range(3)) and "more)" not in out
    written = pd.read_csv(csv_path, dtype=str)
    assert list(written.columns) == ["problem", "row", "id", "detail", "fix", "severity"]
    assert sorted(written[written.problem == "missing image file"].id) == sorted(missing)
    assert len(written) == sum(len(ids) for ids in flaws.values()) - 1  # "Capes" is known without --checkpoint
    data = load_pairs(path)
    assert all(data.ids[int(row) - 1] == item for row, item in zip(written.row, written.id))  # 1-based rows
    assert main(["validate", "--data", path, "--show", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: chtn validate: argument --show") and "expected a positive number or 'all'" in err
    assert err.count("\n") == 1  # one line, not argparse's usage block


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_write_clean_writes_a_manifest_that_validates_clean(flawed, tmp_path, capsys, suffix):
    path, flaws = flawed
    clean = tmp_path / "elsewhere" / f"clean.{suffix}"
    clean.parent.mkdir()
    assert main(["validate", "--data", path, "--checkpoint", str(CKPT), "--write-clean", str(clean)]) == 2
    assert "add --skip-invalid" in capsys.readouterr().err and not clean.exists()
    args = ["validate", "--data", path, "--checkpoint", str(CKPT), "--skip-invalid", "--write-clean", str(clean)]
    assert main(args) == 0
    assert f"wrote 33 valid rows to {clean}" in capsys.readouterr().out
    assert main(["validate", "--data", str(clean), "--checkpoint", str(CKPT)]) == 0
    assert "33 rows, no problems found." in capsys.readouterr().out
    kept, original = load_pairs(clean), load_pairs(path)
    assert set(kept.ids) == set(original.ids) - _ids(flaws)
    where = dict(zip(original.ids, original.image_paths))  # relative paths that resolve from the new folder
    assert all(image == where[item] for item, image in zip(kept.ids, kept.image_paths))


def test_write_clean_refuses_a_bad_destination_before_any_work(flawed, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    for target in (tmp_path / "a-file" / "clean.csv", tmp_path / "clean.txt", tmp_path):
        assert main(["validate", "--data", flawed[0], "--skip-invalid", "--write-clean", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(target) in err and "Traceback" not in err


def test_dashboard_open_dataset_stops_or_skips_only_the_test_rows(flawed, capsys):
    path, flaws = flawed
    checkpoint = ws.open_checkpoint("chtn_fashion_source")
    with pytest.raises(DataValidationError) as info:
        ws.open_dataset(path, checkpoint)
    message = str(info.value)
    assert 'tick "Skip invalid rows"' in message and "The test split" in message
    listing = re.search(r"`(python -m chtn validate [^`]+)` lists every offender", message)[1]
    assert main(shlex.split(listing)[3:]) == 1  # runs as printed: exit 1, invalid rows, each one listed
    listed = capsys.readouterr().out
    assert "missing image file: 5 — " in listed and "more)" not in listed  # --show all: none held back
    assert "same image, different labels" not in message  # a conflict between train rows: not what it opens
    data, report = ws.open_dataset(path, checkpoint, skip_invalid=True)
    bad = _ids(flaws, "test", path)
    assert set(data.splits) == {"test"} and set(data.ids) == set(load_pairs(path).split("test").ids) - bad
    assert {data_id for data_id in (report.table().id)} >= bad and report.n_rows == 24
    assert report.skipped_note("test split").startswith(f"Skipped {len(bad)} invalid of 24 rows of the test split.")


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--checkpoint", str(CKPT)],
        ["embed", "--checkpoint", str(CKPT), "--out", "{tmp}/emb.npz"],
        ["search", "--checkpoint", str(CKPT), "--text", "black leather belt", "-k", "3"],
        ["project", "--checkpoint", str(CKPT), "--method", "pca"],
    ],
    ids=lambda c: c[0],
)
def test_split_commands_stop_or_skip_the_same_way(flawed, tmp_path, capsys, command):
    path, flaws = flawed
    args = [c.format(tmp=tmp_path) for c in command] + ["--data", path]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "The test split" in err and "pass --skip-invalid to drop them" in err and "Traceback" not in err
    assert main([*args, "--skip-invalid"]) == 0
    out, err = capsys.readouterr()
    n_bad = len(_ids(flaws, "test", path))
    assert f"--skip-invalid: Skipped {n_bad} invalid of 24 rows of the test split." in err  # not in the results
    if command[0] == "evaluate":
        assert f"on {24 - n_bad} test pairs" in out


def test_train_skip_invalid_trains_on_the_valid_rows(flawed, tmp_path, capsys):
    path, flaws = flawed
    args = ["train", "--data", path, "--out", str(tmp_path / "run"), "--set", "train.epochs=1"]
    assert main(args) == 2
    assert "same image, different labels" in capsys.readouterr().err  # train uses every row, so checks them all
    assert main([*args, "--skip-invalid", "--set", "train.min_steps_per_epoch=2"]) == 0
    assert "--skip-invalid: Skipped 14 invalid of 48 rows of the dataset." in capsys.readouterr().err
    meta = load_checkpoint(tmp_path / "run" / "best.safetensors").meta
    assert meta["dataset"]["n_train"] == 20 - 2 and meta["dataset"]["n_test"] == 24 - 11


def test_sidebar_skip_invalid_rows_opens_the_rest_and_says_what_was_skipped(flawed):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT
    from tests.test_app import _evaluated

    path, flaws = flawed
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
    at.run()
    at.selectbox(key="sb_dataset").set_value("Manifest or Wikipedia folder (path)…").run()
    at.text_input(key="sb_dataset_path").input(path).run()
    assert not at.exception and 'tick "Skip invalid rows"' in at.error[0].value
    _evaluated(at.checkbox(key="sb_skip_invalid").check().run())
    assert not at.exception and not at.error and len(at.metric) == 9
    n_bad = len(_ids(flaws, "test", path))
    assert at.warning[0].value.startswith(f"Skipped {n_bad} invalid of 24 rows of the test split.")
    at.switch_page("views/explorer.py").run()  # the choice is kept across pages, like the other sidebar widgets
    assert not at.exception and not at.error and at.checkbox(key="sb_skip_invalid").value is True


def test_a_split_has_the_rows_the_whole_dataset_keeps(flawed, capsys):
    """One test set per dataset: a command that opens one split drops the rows `chtn train` drops from it, the
    test belt (and the validation shirt) whose bytes are a training image included, and no other."""
    path, flaws = flawed
    labels = load_checkpoint(CKPT).label_names  # the test split of a (checkpoint, dataset): its labels count
    everything = load_pairs(path, labels)
    whole = validate_pairs(everything, labels)
    kept = {}
    for split in ("test", "val"):
        data, report = load_checked_pairs(path, split, labels, skip_invalid=True)
        rows = [r for r, s in enumerate(everything.splits) if s == split and r not in whole.bad_rows]
        kept[split] = [everything.ids[r] for r in rows]
        assert data.ids == kept[split]
        leaked = {f.item_id for f in report.problems[f"pair split across train/{split}"]}
        assert leaked == set(flaws[f"pair split across train/{split}"])
    assert main(["evaluate", "--checkpoint", str(CKPT), "--data", path, "--skip-invalid"]) == 0
    out, err = capsys.readouterr()
    assert "pair split across train/test: 1 — " in err and f"test id {flaws['pair split across train/test'][0]}" in err
    assert f"on {len(kept['test'])} test pairs" in out
    _, clean = load_checked_pairs(PAIRS, "test")
    assert clean.ok  # the sample's test images are not training images


def test_an_image_named_by_many_rows_is_decoded_once_and_judged_for_each(tmp_path, monkeypatch):
    """A large split may reuse one file in many rows: it is opened once, and a problem with it is reported on every
    row that names it. The verdict is kept on disk by content (every process opening the split would otherwise decode
    every image again): validating again decodes nothing, a file rewritten since is decoded again, and a copy under
    another name is reported under its own name, never the other file's."""
    import chtn.image_checks as image_checks

    monkeypatch.setenv("CHTN_CACHE_DIR", str(tmp_path / "cache"))  # no verdicts yet
    good = load_pairs(PAIRS).image_paths[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:200])  # a truncated JPEG
    rows = [f"{i},{good if i % 2 else broken},title {i},{'Tshirts'},test" for i in range(10)]
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("id,image,text,label,split\n" + "\n".join(rows) + "\n")
    opened: list[str] = []
    monkeypatch.setattr(image_checks, "open_rgb", lambda path: opened.append(path.name) or open_rgb(path))
    report = validate_pairs(load_pairs(manifest), ["Tshirts"])
    assert sorted(opened) == sorted([good.name, "broken.jpg"])  # two files, ten rows
    assert [f.row for f in report.problems["unreadable image file"]] == [0, 2, 4, 6, 8]
    assert not validate_pairs(load_pairs(manifest), ["Tshirts"]).ok and len(opened) == 2  # judged, not decoded
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(broken.read_bytes())
    manifest.write_text(manifest.read_text() + f"10,{copy},title 10,Tshirts,test\n")
    details = [f.detail for f in validate_pairs(load_pairs(manifest), ["Tshirts"]).problems["unreadable image file"]]
    assert len(opened) == 2 and details[-1].startswith("copy.jpg (") and details[0].startswith("broken.jpg (")
    broken.write_bytes(good.read_bytes() + b"\0")  # mended: other bytes, another verdict
    assert [f.row for f in validate_pairs(load_pairs(manifest), ["Tshirts"]).problems["unreadable image file"]] == [10]
    assert opened[2:] == ["broken.jpg"]


def test_image_checks_without_a_writable_cache_still_decode_and_judge(tmp_path, monkeypatch):
    """A cache folder that cannot be created (a read-only home, a file in its place) is skipped, not an error."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CHTN_CACHE_DIR", str(blocker / "cache"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(load_pairs(PAIRS).image_paths[0].read_bytes()[:200])
    from chtn.image_checks import decode_problems

    verdict = decode_problems([broken])[broken]
    assert verdict is not None and verdict[0] == "unreadable image file" and verdict[1].startswith("broken.jpg (")


def test_a_near_match_is_only_the_same_name_never_another_items_file(tmp_path):
    """Issue 25's case: '1729.jpg' is missing and the folder holds '1829.jpg' (another item's image): no suggestion,
    since a row pointed at it would pair its text with that picture. The same name with a space before the
    extension, another case, another Unicode normal form or another image extension is suggested."""
    images = sorted((PAIRS.parent / "images").iterdir())[:5]
    folder = tmp_path / "images"
    folder.mkdir()
    present = {"1829.jpg": images[0], "22 .jpg": images[1], "Shoe.JPEG": images[2], "cafe\u0301.jpg": images[3]}
    for name, source in present.items():
        (folder / name).write_bytes(source.read_bytes())
    (folder / "1978.jpg").write_bytes(images[4].read_bytes())
    wanted = {"1729": "1729.jpg", "1784": "1784.jpg", "22": "22.jpg", "shoe": "shoe.jpg", "cafe": "caf\u00e9.jpg"}
    rows = [f"{i},images/{name},a title,Watches,test" for i, name in wanted.items()]
    (tmp_path / "pairs.csv").write_text("id,image,text,label,split\n" + "\n".join(rows) + "\n", encoding="utf-8")
    table = validate_pairs(load_pairs(tmp_path / "pairs.csv")).table().set_index("id")
    assert set(table.problem) == {"missing image file"} and len(table) == 5
    for item in ("1729", "1784"):
        assert "near match" not in table.detail[item] and "restore the file" in table.fix[item]
    for item, match in (("22", "22 .jpg"), ("shoe", "Shoe.JPEG"), ("cafe", "cafe\u0301.jpg")):
        assert f"(near match: {match!r})" in table.detail[item], table.detail[item]
        assert f"point the row at {match!r}" in table.fix[item]


def test_the_next_step_validate_prints_works_as_printed(flawed, tmp_path, capsys):
    """Copied as it stands, the printed command writes a clean manifest that every command then opens without
    --skip-invalid, with the test rows that --skip-invalid keeps; --write-clean makes a missing folder."""
    path, _ = flawed
    assert main(["validate", "--data", path, "--checkpoint", str(CKPT)]) == 1
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  python -m chtn validate")]
    assert len(printed) == 1
    assert main(shlex.split(printed[0])[3:]) == 0  # what follows `python -m chtn`
    clean = Path(path).with_name("pairs.clean.csv")
    assert main(["validate", "--data", str(clean), "--checkpoint", str(CKPT)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(CKPT), "--data", path, "--skip-invalid"]) == 0
    skipped = capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(CKPT), "--data", str(clean)]) == 0
    assert re.search(r"on \d+ test pairs", skipped)[0] in capsys.readouterr().out
    deeper = tmp_path / "not" / "yet" / "clean.jsonl"
    assert main(["validate", "--data", path, "--skip-invalid", "--write-clean", str(deeper)]) == 0 and deeper.is_file()
