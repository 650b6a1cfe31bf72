"""Dataset formats and validation (chtn.data), on small datasets built from the real fashion sample."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from chtn.cli import main
from chtn.data import load_pairs, load_source, load_wikipedia
from chtn.errors import CHTNError, DataValidationError
from chtn.splits import stratified_split
from chtn.validation import ensure_valid, validate_pairs, validate_source

from .conftest import CIFAR, PAIRS, SOURCE

FASHION = PAIRS.parent
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ---- helpers: small manifests made of real sample rows and real JPEGs ----


def real_rows(labels=("Watches", "Belts", "Tshirts"), per_label=2) -> list[dict[str, str]]:
    """The first `per_label` rows of each label from the sample's pairs.csv (labels in the order given)."""
    with PAIRS.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    picked = []
    for label in labels:
        picked += [dict(r) for r in rows if r["label"] == label][:per_label]
    assert len(picked) == len(labels) * per_label
    return picked


def copy_image(name: str, folder: Path) -> None:
    """Copy the real sample image `images/<name>` into `folder/images/`."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FASHION / "images" / name, folder / "images" / name)


def write_manifest(folder: Path, rows: list[dict[str, str]], fmt: str = "csv", copy_images: bool = True) -> Path:
    """Write `rows` (id,image,text,label,split) as folder/pairs.<fmt>, copying the real images they name."""
    folder.mkdir(parents=True, exist_ok=True)
    if copy_images:
        for row in rows:
            if (FASHION / row["image"]).is_file():
                copy_image(Path(row["image"]).name, folder)
    path = folder / f"pairs.{fmt}"
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "image", "text", "label", "split"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


# ---- 1. CSV / JSONL manifests ----


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest_rows_and_paths_relative_to_manifest_folder(tmp_path, monkeypatch, fmt):
    rows = real_rows()
    path = write_manifest(tmp_path / "data", rows, fmt)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths must resolve against the manifest, not the working directory

    data = load_pairs(path)

    assert len(data) == 6
    assert data.ids == [r["id"] for r in rows]
    assert data.texts == [r["text"] for r in rows]
    assert data.labels == [r["label"] for r in rows]
    assert data.splits == [r["split"] for r in rows]
    assert data.image_paths == [(tmp_path / "data" / r["image"]).resolve() for r in rows]
    assert all(p.is_file() for p in data.image_paths)
    assert data.source == str(path)


def test_csv_and_jsonl_load_identical_datasets(tmp_path):
    rows = real_rows()
    from_csv = load_pairs(write_manifest(tmp_path, rows, "csv"))
    from_jsonl = load_pairs(write_manifest(tmp_path, rows, "jsonl"))
    for attribute in ("ids", "image_paths", "texts", "labels", "splits", "label_names"):
        assert getattr(from_csv, attribute) == getattr(from_jsonl, attribute), attribute
    assert from_csv.fingerprint() == from_jsonl.fingerprint()


def test_manifest_split_and_label_are_normalised(tmp_path):
    rows = real_rows(per_label=1)
    rows[0]["split"], rows[1]["split"], rows[1]["label"] = " TRAIN ", "Test", " Belts "
    data = load_pairs(write_manifest(tmp_path, rows))
    assert data.splits[:2] == ["train", "test"]
    assert data.labels[1] == "Belts"


def test_jsonl_non_string_values_become_strings(tmp_path):
    rows = real_rows(per_label=1)
    lines = [json.dumps({**r, "id": int(r["id"])}) for r in rows]
    lines[1] = json.dumps({**rows[1], "text": None})
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")  # trailing blank line is ignored
    data = load_pairs(path)
    assert data.ids == [r["id"] for r in rows]
    assert data.texts[1] == ""


def test_label_names_sorted_by_default(tmp_path):
    data = load_pairs(write_manifest(tmp_path, real_rows()))  # rows come Watches, Belts, Tshirts
    assert data.label_names == ["Belts", "Tshirts", "Watches"]
    assert data.label_index.tolist() == [2, 2, 0, 0, 1, 1]


def test_label_names_fixed_when_passed(tmp_path):
    fixed = ["Watches", "Socks", "Tshirts", "Belts"]  # not sorted, and with a class absent from the rows
    data = load_pairs(write_manifest(tmp_path, real_rows()), label_names=fixed)
    assert data.label_names == fixed
    assert data.label_index.tolist() == [0, 0, 3, 3, 2, 2]
    assert data.label_index.dtype == np.int64


def test_label_index_on_real_sample(pairs):
    assert len(pairs) == 700
    assert len(pairs.label_names) == 20 and pairs.label_names == sorted(pairs.label_names)
    index = pairs.label_index
    assert [pairs.label_names[i] for i in index] == pairs.labels
    assert np.bincount(index).tolist() == [35] * 20


def test_select_keeps_order_and_label_names(pairs):
    subset = pairs.select(np.array([5, 0, 699]))
    assert subset.ids == [pairs.ids[5], pairs.ids[0], pairs.ids[699]]
    assert subset.image_paths == [pairs.image_paths[5], pairs.image_paths[0], pairs.image_paths[699]]
    assert subset.texts == [pairs.texts[5], pairs.texts[0], pairs.texts[699]]
    assert subset.label_names == pairs.label_names  # all 20, though only 2 classes are present
    assert subset.label_index.tolist() == [pairs.label_index[5], pairs.label_index[0], pairs.label_index[699]]
    assert len(pairs) == 700  # the original is untouched


def test_split_keeps_label_names(tmp_path, pairs):
    test = pairs.split("test")
    assert len(test) == 400 and set(test.splits) == {"test"}
    assert test.label_names == pairs.label_names
    assert len(pairs.split("train")) == 200 and len(pairs.split("val")) == 100

    rows = real_rows()
    rows[0]["split"] = rows[1]["split"] = "test"
    for row in rows[2:]:
        row["split"] = "train"
    small = load_pairs(write_manifest(tmp_path, rows))
    only_watches = small.split("test")
    assert only_watches.labels == ["Watches", "Watches"]
    assert only_watches.label_names == ["Belts", "Tshirts", "Watches"]
    assert only_watches.label_index.tolist() == [2, 2]  # index of Watches in the full dataset


def test_fingerprint_stable_and_sensitive_to_texts_and_image_bytes(tmp_path):
    rows = real_rows()
    path = write_manifest(tmp_path, rows)
    original = load_pairs(path).fingerprint()
    assert load_pairs(path).fingerprint() == original  # stable across loads
    assert len(original) == 16

    changed = [dict(r) for r in rows]
    changed[3]["text"] += " (new season)"
    write_manifest(tmp_path, changed, copy_images=False)
    assert load_pairs(path).fingerprint() != original

    write_manifest(tmp_path, rows, copy_images=False)  # text restored
    assert load_pairs(path).fingerprint() == original

    # same file name, bytes of another real image
    target = tmp_path / rows[0]["image"]
    shutil.copyfile(FASHION / rows[4]["image"], target)
    assert load_pairs(path).fingerprint() != original

    copy_image(Path(rows[0]["image"]).name, tmp_path)  # original bytes back
    assert load_pairs(path).fingerprint() == original


def test_fingerprint_is_computed_once_per_dataset_object(monkeypatch):
    """A page asks for it many times: the images are hashed once per object; a selection or a dataset changed
    with dataclasses.replace is a new object with its own fingerprint."""
    import dataclasses

    from chtn import data as data_module

    pairs, source = load_pairs(PAIRS), load_source(SOURCE)
    hashed: list[Path] = []
    digest = data_module.file_digest
    monkeypatch.setattr(data_module, "file_digest", lambda path: hashed.append(path) or digest(path))
    first = pairs.fingerprint()
    assert len(hashed) == len(pairs) and pairs.fingerprint() == first and len(hashed) == len(pairs)
    assert source.fingerprint() == source.fingerprint() and len(hashed) == len(pairs) + len(source)
    test = pairs.split("test")
    assert test.fingerprint() != first and len(hashed) == len(pairs) + len(source) + len(test)
    edited = dataclasses.replace(test, texts=[*test.texts[:-1], test.texts[-1] + " (new season)"])
    assert edited.fingerprint() != test.fingerprint()
    assert edited == dataclasses.replace(edited)  # the stored fingerprint takes no part in equality


def test_fingerprint_sensitive_to_label_and_split(tmp_path):
    rows = real_rows()
    path = write_manifest(tmp_path, rows)
    original = load_pairs(path).fingerprint()
    for column, value in (("label", "Socks"), ("split", "val")):
        changed = [dict(r) for r in rows]
        changed[0][column] = value
        write_manifest(tmp_path, changed, copy_images=False)
        assert load_pairs(path).fingerprint() != original, column


def test_manifest_errors_are_chtn_errors(tmp_path):
    with pytest.raises(CHTNError, match="Dataset not found"):
        load_pairs(tmp_path / "nope.csv")
    (tmp_path / "pairs.tsv").write_text("id\timage\n", encoding="utf-8")
    with pytest.raises(CHTNError, match="unsupported dataset file"):
        load_pairs(tmp_path / "pairs.tsv")
    (tmp_path / "empty.csv").write_text("id,image,text,label,split\n", encoding="utf-8")
    with pytest.raises(CHTNError, match="has no rows"):
        load_pairs(tmp_path / "empty.csv")
    (tmp_path / "nolabel.csv").write_text("id,image,text,split\n1,images/1.jpg,a shirt,train\n", encoding="utf-8")
    with pytest.raises(CHTNError, match=r"lacks column\(s\) \['label'\]"):
        load_pairs(tmp_path / "nolabel.csv")
    (tmp_path / "latin1.csv").write_bytes("id,image,text,label,split\n1,a.jpg,caf\xe9,Tops,train\n".encode("latin-1"))
    with pytest.raises(CHTNError, match="not UTF-8"):
        load_pairs(tmp_path / "latin1.csv")


def test_csv_row_with_wrong_field_count_names_the_line(tmp_path):
    row = real_rows(per_label=1)[0]
    good = f"{row['id']},{row['image']},{row['text']},{row['label']},{row['split']}"
    path = tmp_path / "pairs.csv"
    path.write_text(f"id,image,text,label,split\n{good}\n{row['id']}2,{row['image']},{row['text']}\n", encoding="utf-8")
    with pytest.raises(CHTNError, match=r"pairs.csv: line 3 has fewer fields"):
        load_pairs(path)
    # an unquoted comma in the text shifts label/split: refused rather than read as label=' Blue'
    path.write_text(f"id,image,text,label,split\n{good}\n9,{row['image']},Men, Blue,Tshirts,train\n", encoding="utf-8")
    with pytest.raises(CHTNError, match=r"pairs.csv: line 3 has more fields"):
        load_pairs(path)


def test_csv_huge_text_reaches_validation(tmp_path):
    rows = real_rows(per_label=1)
    rows[1]["text"] = (rows[1]["text"] + " ") * 6000  # > 131,072 chars: over csv's default field limit
    limit = csv.field_size_limit()
    data = load_pairs(write_manifest(tmp_path, rows))
    assert csv.field_size_limit() == limit  # the process-wide csv setting is restored
    assert data.texts[1] == rows[1]["text"]
    report = validate_pairs(data)
    assert list(report.problems) == ["text too long"] and report.bad_rows == {1}


def test_csv_with_byte_order_mark_loads(tmp_path):
    rows = real_rows(per_label=1)
    path = write_manifest(tmp_path, rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as spreadsheet programs save "CSV UTF-8"
    assert load_pairs(path).ids == [r["id"] for r in rows]


def test_jsonl_bad_lines_name_the_line(tmp_path):
    rows = real_rows(per_label=1)
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(CHTNError, match="line 2 is not valid JSON"):
        load_pairs(path)
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(list(rows[1].values())) + "\n", encoding="utf-8")
    with pytest.raises(CHTNError, match="line 2 is not a JSON object"):
        load_pairs(path)
    partial = {k: v for k, v in rows[1].items() if k != "label"}
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(partial) + "\n", encoding="utf-8")
    with pytest.raises(CHTNError, match=r"lacks column\(s\) \['label'\] in row 2"):
        load_pairs(path)


# ---- 2. Wikipedia layout ----

WIKI_CATEGORIES = ["Watches", "Handbags", "Tshirts"]  # deliberately not sorted
GREEK = "Μπλε ανδρικό μπλουζάκι με λαιμόκοψη"
CHINESE = "男士蓝色纯棉T恤，圆领短袖"


def build_wikipedia(folder: Path) -> dict:
    """A tiny Wikipedia-layout dataset from real sample images; returns what the loader should produce."""
    watches, handbags, shirts = (real_rows((label,), per_label=2) for label in WIKI_CATEGORIES)
    # (text_id, image_id, category index (1-based), split, text file name, file content, expected text)
    entries = [
        ("w1", watches[0]["id"], 1, "train", "w1.txt", watches[0]["text"] + "\n", watches[0]["text"]),
        (
            "h1",
            handbags[0]["id"],
            2,
            "train",
            "h1.xml",
            f"<document><title>Ignored title</title><text>\n  {handbags[0]['text']}\n  &amp; <b>strap</b>\n"
            "</text></document>\n",
            f"{handbags[0]['text']} & strap",
        ),
        ("t1", shirts[0]["id"], 3, "train", "t1.txt", GREEK + "\n", GREEK),
        ("w2", watches[1]["id"], 1, "test", "w2.txt", watches[1]["text"], watches[1]["text"]),
        ("t2", shirts[1]["id"], 3, "test", "t2.txt", CHINESE + "\n", CHINESE),
    ]
    (folder / "texts").mkdir(parents=True)
    (folder / "categories.list").write_text("\n".join(WIKI_CATEGORIES) + "\n", encoding="utf-8")
    for split in ("train", "test"):
        lines = [f"{t}\t{i}\t{c}" for t, i, c, s, *_ in entries if s == split]
        (folder / f"{split}set_txt_img_cat.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for _text_id, image_id, category, _split, text_file, content, _ in entries:
        (folder / "texts" / text_file).write_text(content, encoding="utf-8")
        image_folder = folder / "images" / WIKI_CATEGORIES[category - 1]
        image_folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FASHION / "images" / f"{image_id}.jpg", image_folder / f"{image_id}.jpg")
    return {
        "ids": [e[0] for e in entries],
        "labels": [WIKI_CATEGORIES[e[2] - 1] for e in entries],
        "splits": [e[3] for e in entries],
        "texts": [e[6] for e in entries],
        "images": [folder / "images" / WIKI_CATEGORIES[e[2] - 1] / f"{e[1]}.jpg" for e in entries],
    }


def test_wikipedia_layout_loads(tmp_path):
    expected = build_wikipedia(tmp_path / "wiki")
    data = load_pairs(tmp_path / "wiki")

    assert data.ids == expected["ids"]
    assert data.labels == expected["labels"]  # categories.list line = 1-based index
    assert data.splits == expected["splits"]
    assert data.texts == expected["texts"]
    assert data.image_paths == expected["images"]
    assert all(p.is_file() for p in data.image_paths)
    assert data.label_names == WIKI_CATEGORIES  # categories.list order, not sorted
    assert data.label_index.tolist() == [0, 1, 2, 0, 2]
    assert validate_pairs(data).ok


def test_wikipedia_xml_and_unicode_texts(tmp_path):
    build_wikipedia(tmp_path)
    data = load_wikipedia(tmp_path)
    texts = dict(zip(data.ids, data.texts))
    assert "<" not in texts["h1"] and "Ignored title" not in texts["h1"] and "&amp;" not in texts["h1"]
    assert texts["h1"].endswith("& strap")
    assert texts["t1"] == GREEK
    assert texts["t2"] == CHINESE


def test_wikipedia_load_pairs_equals_load_wikipedia_and_label_names_can_be_fixed(tmp_path):
    build_wikipedia(tmp_path)
    a, b = load_pairs(tmp_path), load_wikipedia(tmp_path)
    assert (a.ids, a.texts, a.labels, a.splits, a.image_paths) == (b.ids, b.texts, b.labels, b.splits, b.image_paths)
    fixed = sorted(WIKI_CATEGORIES)
    c = load_pairs(tmp_path, label_names=fixed)
    assert c.label_names == fixed and c.labels == a.labels
    assert c.label_index.tolist() == [2, 0, 1, 2, 1]


def test_wikipedia_missing_text_file_gives_empty_text_flagged_by_validation(tmp_path):
    build_wikipedia(tmp_path)
    (tmp_path / "texts" / "w2.txt").unlink()
    data = load_pairs(tmp_path)
    assert data.texts[3] == ""
    report = validate_pairs(data)
    assert set(report.problems) == {"empty text"} and report.bad_rows == {3}
    assert "id w2" in report.summary()


@pytest.mark.parametrize(
    "bad_line, message",
    [
        (
            "t9\tonly-two-fields",
            r"testset_txt_img_cat\.list: line 3 should be 'text_id<TAB>image_id<TAB>category_index'",
        ),
        ("t9\t10000\tTshirts", r"testset_txt_img_cat\.list: line 3 should be"),
        (
            "t9\t10000\t4",
            r"testset_txt_img_cat\.list: line 3 has category 4; categories\.list has 3 \(indices are 1-based\)",
        ),
        ("t9\t10000\t0", r"testset_txt_img_cat\.list: line 3 has category 0"),
    ],
)
def test_wikipedia_bad_list_line_names_file_and_line(tmp_path, bad_line, message):
    build_wikipedia(tmp_path)
    list_file = tmp_path / "testset_txt_img_cat.list"
    list_file.write_text(list_file.read_text(encoding="utf-8") + bad_line + "\n", encoding="utf-8")
    with pytest.raises(CHTNError, match=message):
        load_pairs(tmp_path)


def test_wikipedia_missing_files(tmp_path):
    build_wikipedia(tmp_path)
    (tmp_path / "testset_txt_img_cat.list").unlink()
    with pytest.raises(CHTNError, match="testset_txt_img_cat.list is missing"):
        load_pairs(tmp_path)
    (tmp_path / "categories.list").unlink()
    with pytest.raises(CHTNError, match="categories.list is missing"):
        load_pairs(tmp_path)


# ---- 3. Source datasets ----


def test_source_manifest_real_sample():
    source = load_source(SOURCE)
    assert len(source) == 2000
    assert len(source.label_names) == 20 and source.label_names == sorted(source.label_names)
    assert set(Counter(source.labels).values()) == {100}
    assert source.image_paths[0] == (SOURCE.parent / "images" / "19610.jpg").resolve()
    assert [source.label_names[i] for i in source.label_index] == source.labels


def test_source_small_jsonl_manifest(tmp_path):
    rows = real_rows(("Socks", "Heels"), per_label=2)
    for row in rows:
        copy_image(Path(row["image"]).name, tmp_path)
    path = tmp_path / "source.jsonl"
    path.write_text(
        "".join(json.dumps({"image": r["image"], "label": r["label"]}) + "\n" for r in rows), encoding="utf-8"
    )
    source = load_source(path, label_names=["Socks", "Heels", "Jeans"])
    assert source.image_paths == [(tmp_path / r["image"]).resolve() for r in rows]
    assert source.labels == ["Socks", "Socks", "Heels", "Heels"]
    assert source.label_index.tolist() == [0, 0, 1, 1]
    assert validate_source(source).ok

    (tmp_path / "nolabel.csv").write_text("image\nimages/x.jpg\n", encoding="utf-8")
    with pytest.raises(CHTNError, match=r"lacks column\(s\) \['label'\]"):
        load_source(tmp_path / "nolabel.csv")


def test_source_folder_per_class_cifar():
    source = load_source(CIFAR)
    assert len(source) == 500
    assert source.label_names == CIFAR_CLASSES
    assert Counter(source.labels) == {name: 50 for name in CIFAR_CLASSES}
    assert all(p.parent.name == label for p, label in zip(source.image_paths, source.labels))
    assert np.bincount(source.label_index).tolist() == [50] * 10
    assert validate_source(source).ok


def test_source_folder_ignores_non_images_and_needs_images(tmp_path):
    for label, image in (
        ("Watches", f"images/{real_rows(('Watches',), 1)[0]['id']}.jpg"),
        ("Belts", f"images/{real_rows(('Belts',), 1)[0]['id']}.jpg"),
    ):
        (tmp_path / "tree" / label).mkdir(parents=True)
        shutil.copyfile(FASHION / image, tmp_path / "tree" / label / Path(image).name)
    (tmp_path / "tree" / "Belts" / "notes.txt").write_text("not an image", encoding="utf-8")
    source = load_source(tmp_path / "tree")
    assert source.labels == ["Belts", "Watches"] and source.label_names == ["Belts", "Watches"]

    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(CHTNError, match="holds no images"):
        load_source(tmp_path / "empty")
    with pytest.raises(CHTNError, match="Source dataset not found"):
        load_source(tmp_path / "nope")


# ---- 4. Validation ----


def corrupt(rows, folder, i):
    """Row i's image becomes a .jpg of garbage bytes (the one place fake image data is written)."""
    rows[i]["image"] = "images/corrupt.jpg"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "images" / "corrupt.jpg").write_bytes(b"this is not a JPEG \x00\xff" * 50)


# problem name -> (mutation of the 6 clean rows, rows it should flag, text expected in the summary)
CASES = {
    "missing image file": (
        lambda rows, folder: rows[1].update(image="images/does-not-exist.jpg"),
        {1},
        "does-not-exist.jpg",
    ),
    "unreadable image file": (lambda rows, folder: corrupt(rows, folder, 2), {2}, "corrupt.jpg"),
    "empty text": (lambda rows, folder: rows[3].update(text="   "), {3}, "id {id3}"),
    "text too long": (lambda rows, folder: rows[0].update(text=(rows[0]["text"] + " ") * 5000), {0}, "id {id0} ("),
    "unknown split": (lambda rows, folder: rows[4].update(split="holdout"), {4}, "'holdout' (use train, val or test)"),
    "duplicate id": (lambda rows, folder: rows[5].update(id=rows[2]["id"]), {5}, "'{id2}' (rows 3 and 6)"),
    "pair split across train/test": (
        lambda rows, folder: (rows[0].update(split="train"), rows[1].update(split="test", image=rows[0]["image"])),
        {1},  # the test row only: skipping it removes the leak and keeps the training row
        "is in both (test id {id1}, train id {id0})",
    ),
}


@pytest.mark.parametrize("problem", sorted(CASES))
def test_validate_pairs_detects_and_names_each_problem(tmp_path, problem):
    mutate, flagged, detail = CASES[problem]
    rows = real_rows()
    assert validate_pairs(load_pairs(write_manifest(tmp_path / "clean", rows))).ok
    ids = {f"id{i}": r["id"] for i, r in enumerate(rows)}
    mutate(rows, tmp_path / "bad")
    data = load_pairs(write_manifest(tmp_path / "bad", rows))

    report = validate_pairs(data)

    assert not report.ok
    assert list(report.problems) == [problem]
    assert report.bad_rows == flagged
    assert report.n_rows == 6
    summary = report.summary()
    assert f"6 rows; {len(flagged)} invalid:" in summary
    assert f"- {problem}: {len(flagged)} — " in summary
    assert detail.format(**ids) in summary


def test_unknown_label_against_known_labels_and_fixed_label_names(tmp_path):
    rows = real_rows()
    path = write_manifest(tmp_path, rows)
    data = load_pairs(path)
    assert validate_pairs(data).ok  # without a reference, every label present is known

    report = validate_pairs(data, known_labels=["Belts", "Tshirts"])
    assert list(report.problems) == ["unknown label"]
    assert report.bad_rows == {0, 1}
    assert f"unknown label: 2 — id {rows[0]['id']}: 'Watches'" in report.summary()

    # label_names from a checkpoint: rows outside them are reported by validation, not dropped at load
    checkpoint_labels = ["Belts", "Tshirts", "Socks"]
    data = load_pairs(path, label_names=checkpoint_labels)
    assert len(data) == 6
    assert validate_pairs(data).bad_rows == {0, 1}


def test_empty_label_is_a_problem(tmp_path):
    rows = real_rows()
    rows[2]["label"] = " "
    report = validate_pairs(load_pairs(write_manifest(tmp_path, rows)))
    assert list(report.problems) == ["empty label"] and report.bad_rows == {2}


def test_max_text_chars_and_check_images_options(tmp_path):
    rows = real_rows()
    rows[1]["image"] = "images/gone.jpg"
    data = load_pairs(write_manifest(tmp_path, rows))
    assert validate_pairs(data, check_images=False).ok
    limit = min(len(t) for t in data.texts) - 1
    report = validate_pairs(data, check_images=False, max_text_chars=limit)
    assert report.bad_rows == set(range(6)) and list(report.problems) == ["text too long"]
    assert "(+1 more)" in report.summary()  # 6 offenders, first 5 shown
    assert f"chars > {limit:,})" in report.summary()


def build_bad_manifest(folder: Path) -> tuple[Path, list[dict[str, str]], set[int]]:
    """8 real rows of which 3 are bad: missing image, corrupt image, empty text."""
    rows = real_rows(("Watches", "Belts", "Tshirts", "Heels"), per_label=2)
    rows[1]["image"] = "images/missing.jpg"
    corrupt(rows, folder, 4)
    rows[6]["text"] = ""
    return write_manifest(folder, rows), rows, {1, 4, 6}


def test_ensure_valid_raises_without_skip(tmp_path):
    path, _, bad = build_bad_manifest(tmp_path)
    data = load_pairs(path)
    report = validate_pairs(data)
    assert report.bad_rows == bad
    with pytest.raises(DataValidationError) as info:
        ensure_valid(data, report, skip_invalid=False, what="target dataset")
    message = str(info.value)
    assert "--skip-invalid" in message
    assert f"The target dataset ({path}) failed validation." in message
    assert "missing image file: 1" in message and "unreadable image file: 1" in message and "empty text: 1" in message
    assert info.value.report is report
    assert isinstance(info.value, CHTNError)


def test_ensure_valid_skip_invalid_drops_exactly_the_bad_rows(tmp_path, capsys):
    path, rows, bad = build_bad_manifest(tmp_path)
    data = load_pairs(path)
    report = validate_pairs(data)

    kept = ensure_valid(data, report, skip_invalid=True, what="target dataset")

    assert kept.ids == [r["id"] for i, r in enumerate(rows) if i not in bad]
    assert kept.texts == [r["text"] for i, r in enumerate(rows) if i not in bad]
    assert kept.label_names == data.label_names
    assert validate_pairs(kept).ok
    assert capsys.readouterr().out == ""  # callers say what was skipped (CLI: print; dashboard: st.warning)
    note = report.skipped_note("dataset")
    assert note.startswith("Skipped 3 invalid of 8 rows of the dataset.\n") and report.summary() in note


def test_ensure_valid_clean_returns_data_and_all_bad_raises(tmp_path, capsys):
    rows = real_rows(per_label=1)
    clean = load_pairs(write_manifest(tmp_path / "clean", rows))
    assert ensure_valid(clean, validate_pairs(clean), skip_invalid=False) is clean
    assert capsys.readouterr().out == ""

    for row in rows:
        row["text"] = ""
    empty = load_pairs(write_manifest(tmp_path / "empty", rows))
    with pytest.raises(DataValidationError, match="No valid rows left"):
        ensure_valid(empty, validate_pairs(empty), skip_invalid=True)


def test_validate_source_and_ensure_valid_on_source(tmp_path):
    rows = real_rows(("Socks", "Heels"), per_label=2)
    for row in rows:
        copy_image(Path(row["image"]).name, tmp_path)
    rows[0]["image"] = "images/missing.jpg"
    corrupt(rows, tmp_path, 3)
    path = tmp_path / "source.csv"
    path.write_text("image,label\n" + "".join(f"{r['image']},{r['label']}\n" for r in rows), encoding="utf-8")
    source = load_source(path)

    report = validate_source(source)
    assert set(report.problems) == {"missing image file", "unreadable image file"}
    assert report.bad_rows == {0, 3}
    assert "missing.jpg" in report.summary() and "corrupt.jpg" in report.summary()
    with pytest.raises(DataValidationError, match="--skip-invalid"):
        ensure_valid(source, report, skip_invalid=False, what="source dataset")
    kept = ensure_valid(source, report, skip_invalid=True, what="source dataset")
    assert kept.image_paths == source.image_paths[1:3]
    assert "Skipped 2 invalid of 4 rows of the source dataset." in report.skipped_note("source dataset")


def test_clean_real_sample_is_ok(pairs):
    report = validate_pairs(pairs)
    assert report.ok, report.summary()
    assert report.summary().startswith("700 rows, no problems found.\nwarnings (do not block):")
    # 22 product titles are in train and test under other ids: the 30 test rows are warned about, not invalid
    assert list(report.warnings) == ["same text in train and test"]
    assert len(report.warnings["same text in train and test"]) == 30


# ---- 5. stratified_split ----


@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.5])
def test_stratified_split_rounds_per_class(pairs, fraction):
    # uneven classes from the real labels: class k keeps its first 5 + k rows
    rows = [
        i
        for k, name in enumerate(pairs.label_names)
        for i in [j for j, label in enumerate(pairs.labels) if label == name][: 5 + k]
    ]
    labels = [pairs.labels[i] for i in rows]
    test = stratified_split(labels, fraction, seed=0)
    assert test.dtype == bool and test.shape == (len(labels),)
    for name, n in Counter(labels).items():
        in_class = np.array([label == name for label in labels])
        assert test[in_class].sum() == round(fraction * n), name


def test_stratified_split_on_all_sample_labels(pairs):
    test = stratified_split(pairs.labels, 0.2, seed=3)
    assert test.sum() == 20 * 7
    assert Counter(np.array(pairs.labels)[test].tolist()) == {name: 7 for name in pairs.label_names}


def test_stratified_split_seeded(pairs):
    a = stratified_split(pairs.labels, 0.3, seed=7)
    assert np.array_equal(a, stratified_split(pairs.labels, 0.3, seed=7))
    assert not np.array_equal(a, stratified_split(pairs.labels, 0.3, seed=8))


# ---- 6. CLI ----


def test_cli_validate_bad_manifest(tmp_path, capsys):
    path, rows, _ = build_bad_manifest(tmp_path)
    code = main(["validate", "--data", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "8 rows; 3 invalid:" in out
    assert "missing image file: 1" in out and "missing.jpg" in out
    assert "unreadable image file: 1" in out
    assert f"empty text: 1 — id {rows[6]['id']}" in out


def test_cli_validate_clean_manifest_and_source(tmp_path, capsys):
    path = write_manifest(tmp_path, real_rows())
    assert main(["validate", "--data", str(path), "--source", str(CIFAR)]) == 0
    out = capsys.readouterr().out
    assert "6 rows, no problems found." in out and "500 rows, no problems found." in out


def test_cli_missing_path_is_one_line_error(tmp_path, capsys):
    code = main(["validate", "--data", str(tmp_path / "nope.csv")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error: Dataset not found")
    assert str(tmp_path / "nope.csv") in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err + captured.out


def test_cli_malformed_csv_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "pairs.csv"
    path.write_text("id,image,text,label,split\n1,images/1.jpg,a shirt\n", encoding="utf-8")
    assert main(["validate", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "line 2 has fewer fields" in err
    assert "Traceback" not in err
