"""`python -m chtn search`: the explorer's retrieval from the command line, on the real sample."""

from __future__ import annotations

import pytest

from chtn.cli import main
from tests.conftest import CHECKPOINTS, PAIRS

CKPT = str(CHECKPOINTS / "chtn_fashion_source.safetensors")


def _search(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["search", "--checkpoint", CKPT, "--data", str(PAIRS), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_query_by_id_with_category_filter_matches_the_explorer(capsys, pairs):
    from analysis.workspace import open_dataset
    from chtn.checkpoint import load_checkpoint
    from chtn.gallery import embed_split
    from chtn.ranking import describe_tie
    from chtn.search import retrieve

    item = pairs.split("test").ids[0]
    code, out, _ = _search(capsys, "--query-id", item, "-k", "5", "--category", "Tshirts", "--category", "Shirts")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:7] == ["rank", "id", "score", "tied_with", "tie_ranks", "category", "relevant"]
    assert len(lines) == 8
    rows = [line.split() for line in lines[1:6]]
    assert all(row[5] in ("Tshirts", "Shirts") for row in rows)
    assert lines[6].startswith("tied_with: other items with the result's score to four decimals")
    checkpoint = load_checkpoint(CKPT)
    gallery = embed_split(checkpoint, open_dataset(PAIRS, checkpoint)[0])
    view = retrieve(
        gallery, "i2t", gallery.image[0], 5, checkpoint.label_names, ["Tshirts", "Shirts"], int(gallery.labels[0]), 0
    )
    assert [row[1] for row in rows] == list(view.table.id)
    assert [int(row[3]) for row in rows] == list(view.table.tied_with)
    assert [row[4] for row in rows] == [f"{a}-{b}" for a, b in zip(view.table.tie_first, view.table.tie_last)]
    tie = describe_tie(*view.paired_tie)
    assert lines[-1] == f"its own pair ranks #{view.paired_rank} of 40" + (f", {tie}" if tie else "")


def test_free_text_finds_the_named_category(capsys):
    code, out, _ = _search(capsys, "--text", "black leather wallet", "-k", "5")
    assert code == 0
    assert [line.split()[5] for line in out.strip().splitlines()[1:6]].count("Wallets") >= 4


@pytest.mark.parametrize(
    "args, message",
    [
        (("--text", "   "), "query text is empty"),
        (("--query-id", "no-such-id"), "No test item has id"),
        (("--image", str(PAIRS)), "is not a readable image"),
        (("--text", "shoe", "--category", "Spacesuits"), "Unknown category"),
    ],
)
def test_bad_queries_get_a_clear_message(capsys, args, message):
    code, out, err = _search(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err
