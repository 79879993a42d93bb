"""The sweep's report page (ganlib/report_page.py) without a browser: self-contained, escaped,
every trial present, plots embedded, the sorting script in place, the confirmation hook; and the
hook in report.write_sweep_report that logs it as report/index.html beside the PNGs it embeds.
What a browser shows of it is tests/test_ui_browser.py."""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from ganlib.report_page import STATUS_COLOURS, render_report_page

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & </td></tr></table> "\'</textarea>'
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr", "area", "base", "embed", "track"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent, self.children, self.parts = tag, attrs, parent, [], []

    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text() for p in self.parts)

    def iter(self, tag: str | None = None):
        for child in self.children:
            if tag is None or child.tag == tag:
                yield child
            yield from child.iter(tag)

    def find(self, tag: str, **attrs: str) -> list[Node]:
        return [n for n in self.iter(tag) if all(n.attrs.get(k.rstrip("_")) == v for k, v in attrs.items())]


class Tree(HTMLParser):
    """A strict little DOM: every non-void element must be closed, in order."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.current = self.root
        self.feed(page)
        self.close()
        assert self.current is self.root, f"<{self.current.tag}> never closed"

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        self.current.parts.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        self.current.parts.append(node)

    def handle_endtag(self, tag):
        assert self.current.tag == tag, f"</{tag}> closes <{self.current.tag}>"
        self.current = self.current.parent

    def handle_data(self, data):
        self.current.parts.append(data)


def png(colour: tuple[int, int, int], size: int = 6) -> bytes:
    """A real PNG (matplotlib is a dependency already)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size / 10, size / 10), dpi=10)
    fig.patch.set_facecolor([c / 255 for c in colour])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def sample(reason: str = HOSTILE):
    """A summary and rows shaped as report.build_report makes them (a smoke sweep's, trimmed)."""
    rows = []
    for i, (trial, status, score, clip) in enumerate([
            ("aa000001", "completed", 1.42, 0.0141), ("aa000002", "stopped_early", 1.97, 0.00115),
            ("aa000003", "collapsed", math.nan, 0.9), ("aa000004", "completed", 10.5, 0.01),
            ("aa000005", "error", math.nan, 0.3)]):
        rows.append({
            "trial_id": trial, "status": status, "reason": reason if status == "error" else "",
            "steps_run": 40 if status == "completed" else 10, "critic_steps": 200 + i,
            "trial_seconds": 11.5 + i, "objective": score, "best_score": score, "best_step": 40.0,
            "last_score": score, "last_w1": score, "w1": score, "kid": math.nan, "samples_per_s": 44515.8,
            "config.loss": "wgan", "config.constraint": None, "config.clip": clip, "config.n_critic": 5 + i,
            "config.optimizer": "rmsprop" if i % 2 else "adam"})
    summary = {
        "name": "wgan_clip-ring8-20261123", "trials": 5, "primary": "w1",
        "searched": ["clip", "n_critic", "optimizer"],
        "by_status": {"completed": 2, "stopped_early": 1, "collapsed": 1, "error": 1},
        "schedule": "ASHA: reduction 2, rungs at steps 10, 20; Optuna TPE",
        "work": {"done": {"completed": {"trials": 2, "seconds": 24.2, "generator_steps": 80, "critic_steps": 400}},
                 "saved": {"scheduler": {"trials": 1, "seconds": 0.82, "generator_steps": 30, "critic_steps": 270}},
                 "total_done": {"seconds": 24.5, "generator_steps": 130, "critic_steps": 930},
                 "total_saved": {"seconds": 0.82, "generator_steps": 30, "critic_steps": 270},
                 "saved_fraction": {"seconds": 0.0325, "generator_steps": 0.1875, "critic_steps": 0.225}},
        "best": {"trial_id": "aa000001", "status": "completed", "score": 1.42,
                 "score_of": "mean w1 over the last scored evaluations (best reached)", "best_step": 40.0,
                 "weights": "checkpoint/generator_best.pt",
                 "config": {"dataset": "ring8", "steps": 40, "clip": 0.0141, "n_critic": 8, "optimizer": "adam",
                            "loss": "wgan", "checkpoint_steps": [10, 20]}},
        "ranked": ["aa000001", "aa000002", "aa000004"], "optuna_trials": 5}
    images = {"w1_vs_clip.png": png((255, 0, 0)), "w1_vs_n_critic.png": png((0, 255, 0)),
              "learning_curves_best.png": png((0, 0, 255))}
    return summary, rows, images


@pytest.fixture(scope="module")
def page():
    summary, rows, images = sample()
    return render_report_page(summary, rows, images)


def test_the_page_is_one_self_contained_document(page):
    tree = Tree(page).root
    assert page.startswith("<!DOCTYPE html>")
    [html] = tree.find("html")
    assert [c.tag for c in html.children] == ["head", "body"]
    assert html.find("meta", charset="utf-8")
    # Nothing is fetched: no URL anywhere, no stylesheet link, no script or font from outside.
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", page)  # base64 may hold '//'
    assert not re.search(r"https?:|//[a-z0-9]", text, re.I), re.search(r".{40}(https?:|//[a-z0-9]).{40}", text)
    assert "@import" not in text and "@font-face" not in text and "url(" not in text
    assert not tree.find("link") and not tree.find("iframe") and not tree.find("object")
    for node in tree.iter():
        for name in ("src", "href", "srcset", "action", "data", "poster", "background"):
            value = node.attrs.get(name)
            assert value is None or (name == "src" and node.tag == "img" and
                                     value.startswith("data:image/png;base64,")), (node.tag, name, value[:80])
    scripts = tree.find("script")
    assert len(scripts) == 1 and "src" not in scripts[0].attrs  # the inline sorting script only
    assert len(tree.find("style")) == 1


def test_hostile_text_is_escaped_and_reads_as_written():
    summary, rows, images = sample()
    summary["name"] = '</title><script>alert("name")</script>'
    summary["best"]["config"]["note"] = "<b>bold</b>"
    page = render_report_page(summary, rows, images)
    tree = Tree(page).root
    assert len(tree.find("script")) == 1 and len(tree.find("img")) == len(images)  # nothing injected
    assert not tree.find("b") and not tree.find("textarea")
    assert tree.find("title")[0].text() == f"Sweep {summary['name']}: report"
    assert tree.find("span", id="sweep-name")[0].text() == summary["name"]
    [error_row] = [tr for tr in tree.find("tr") if tr.attrs.get("data-trial") == "aa000005"]
    [reason] = [td for td in error_row.find("td") if "reason" in (td.attrs.get("class") or "")]
    assert reason.text() == HOSTILE
    assert "<script>alert" not in page and 'onerror=alert(1)>' not in page


def test_every_trial_is_a_row_ranked_with_its_status_coloured(page):
    tree = Tree(page).root
    [table] = tree.find("table", id="trial-table")
    assert "sortable" in table.attrs["class"]
    headers = [th.text() for th in table.find("th")]
    assert headers[:4] == ["rank", "trial_id", "status", "best_score"]
    assert "kid" not in headers and "config.constraint" not in headers  # empty for every trial
    assert "config.clip" in headers and "last_w1" in headers
    body = table.find("tbody")[0].find("tr")
    ids = [tr.attrs["data-trial"] for tr in body]
    assert sorted(ids) == [f"aa00000{i}" for i in range(1, 6)]
    assert ids[:3] == ["aa000001", "aa000002", "aa000004"]  # the ranked ones first, in order
    assert [tr.attrs.get("class") for tr in body].count("best") == 1 and body[0].attrs["class"] == "best"
    status_column = headers.index("status")
    for tr, expected in zip(body, ["completed", "stopped_early", "completed"], strict=False):
        cell = tr.find("td")[status_column]
        assert cell.text() == expected and STATUS_COLOURS[expected] in cell.attrs["style"]
    texts = [td.text() for td in body[0].find("td")]
    assert texts[headers.index("config.clip")] == "0.0141" and texts[headers.index("samples_per_s")] == "4.452e+04"


def test_numeric_columns_carry_raw_values_and_the_sorting_script_is_there(page):
    tree = Tree(page).root
    [table] = tree.find("table", id="trial-table")
    header_cells = table.find("th")
    numeric = [th.attrs.get("data-type") == "number" for th in header_cells]
    by_name = dict(zip([th.text() for th in header_cells], numeric, strict=True))
    assert by_name["best_score"] and by_name["config.clip"] and by_name["steps_run"] and by_name["rank"]
    assert not by_name["trial_id"] and not by_name["status"] and not by_name["config.optimizer"]
    for tr in table.find("tbody")[0].find("tr"):
        for td, is_number in zip(tr.find("td"), numeric, strict=True):
            if is_number:
                raw = td.attrs["data-sort"]
                assert raw == "" or math.isfinite(float(raw))  # NaN is '' (sorted last)
    script = tree.find("script")[0].text()
    assert "table.sortable" in script and "parseFloat" in script and "addEventListener(\"click\"" in script


def test_an_infinite_value_sorts_as_javascripts_infinity_not_as_missing():
    from ganlib.report_page import _cell

    def raw(value):
        return re.search(r'data-sort="([^"]*)"', _cell(value, True)).group(1)
    # the page's parseFloat: 'inf' would read NaN (a missing value), 'Infinity' reads Infinity
    assert (raw(math.inf), raw(-math.inf), raw(0.25), raw(math.nan)) == ("Infinity", "-Infinity", "0.25", "")


def test_plots_are_embedded_byte_for_byte_under_their_sections(page):
    tree = Tree(page).root
    _, _, images = sample()
    sections = {s.attrs.get("id"): s for s in tree.find("section")}
    assert {"best", "work", "trials", "sensitivity", "curves"} <= set(sections)
    assert "confirmation" not in sections  # no confirmation in the summary: no section
    for section, names in (("sensitivity", ["w1_vs_clip.png", "w1_vs_n_critic.png"]),
                           ("curves", ["learning_curves_best.png"])):
        figures = sections[section].find("figure")
        assert [f.attrs["data-name"] for f in figures] == names
        for figure in figures:
            src = figure.find("img")[0].attrs["src"]
            assert base64.b64decode(src.split(",", 1)[1]) == images[figure.attrs["data-name"]]


def test_header_best_and_work_say_what_the_summary_says(page):
    tree = Tree(page).root
    header = tree.find("header")[0].text()
    assert "wgan_clip-ring8-20261123" in header and "ASHA: reduction 2" in header
    badges = [b.text() for b in tree.find("div", id="status-counts")[0].find("span")]
    assert badges == ["2 completed", "1 stopped_early", "1 collapsed", "1 error"]
    best = [s for s in tree.find("section") if s.attrs.get("id") == "best"][0].text()
    assert "aa000001" in best and "1.42" in best and "clip" in best and "10, 20" in best
    work = [t for t in tree.find("table") if t.attrs.get("id") == "work-table"][0]
    lines = [[td.text() for td in tr.find("td")] for tr in work.find("tbody")[0].find("tr")]
    assert ["saved (estimated)", "scheduler", "1", "0.82", "30", "270"] in lines
    assert lines[-1] == ["saved / (done + saved)", "", "", "3%", "19%", "22%"]


def test_the_confirmation_hook_renders_its_rows():
    summary, rows, images = sample()
    summary["confirmation"] = {"metric": "w1", "level": 0.95, "rows": [
        {"configuration": {"clip": 0.0141, "n_critic": 8}, "seeds": [1, 2, 3], "mean": 1.5, "std": 0.12,
         "interval": [1.2, 1.8], "trial_id": "aa000001"},
        {"config": "clip=0.9 <odd>", "seeds": 3, "mean": 9.0, "std": 2.0, "interval": "[5, 13]"}]}
    tree = Tree(render_report_page(summary, rows, images)).root
    [section] = [s for s in tree.find("section") if s.attrs.get("id") == "confirmation"]
    [table] = section.find("table")
    assert [th.text() for th in table.find("th")] == ["configuration", "seeds", "mean", "std", "interval"]
    lines = [[td.text() for td in tr.find("td")] for tr in table.find("tbody")[0].find("tr")]
    assert lines == [["clip=0.0141 n_critic=8", "1, 2, 3", "1.5", "0.12", "[1.2, 1.8]"],
                     ["clip=0.9 <odd>", "3", "9", "2", "[5, 13]"]]
    assert "0.95" in section.text()
    plain_list = render_report_page({**summary, "confirmation": [{"trial_id": "x", "mean": 1.0}]}, rows, images)
    assert 'id="confirmation"' in plain_list
    assert 'id="confirmation"' not in render_report_page({**summary, "confirmation": []}, rows, images)


def test_a_sweep_with_no_trial_and_no_best_still_renders():
    page = render_report_page({"name": "empty", "trials": 0, "by_status": {}, "work": {}}, [], {})
    tree = Tree(page).root
    assert "No healthy trial" in page and "No trial ran" in page and not tree.find("img")


# -- the hook in report.write_sweep_report ---------------------------------------------------------
def tracked_sweep(tmp_path: Path, histories: dict[str, list[float]]):
    """A real SQLite MLflow store holding a parent run and one child run per trial, each child with
    its ``w1`` history logged at steps 10, 20, ... as the sweep's logger logs it."""
    from mlflow import MlflowClient

    from ganlib.tracking import PARENT_TAG, TRIAL_ID_TAG

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.create_experiment("report", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment_id).info.run_id
    for trial_id, values in histories.items():
        child = client.create_run(experiment_id, tags={PARENT_TAG: parent, TRIAL_ID_TAG: trial_id}).info.run_id
        for i, value in enumerate(values):
            client.log_metric(child, "w1", value, step=10 * (i + 1))
    return client, parent


def logged_artifacts(client, run_id: str) -> dict[str, bytes]:
    root = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def fake_result(trial_id: str, config: dict, scores: list[float]):
    import pandas as pd

    steps = [10 * (i + 1) for i in range(len(scores))]
    history = pd.DataFrame({"step": steps, "scored": [True] * len(scores), "score": scores, "w1": scores,
                            "objective": scores})
    metrics = {"trial_id": trial_id, "step": steps[-1], "critic_steps": 5 * steps[-1], "time_total_s": 3.0,
               "objective": min(scores), "score": scores[-1], "w1": scores[-1]}
    return SimpleNamespace(metrics=metrics, metrics_dataframe=history, config=config, path=f"/x/trial_{trial_id}",
                           error=None)


def test_write_sweep_report_logs_index_html_embedding_the_pngs_it_logs(tmp_path):
    from ganlib.report import build_report, write_sweep_report
    from ganlib.settings import SweepSettings
    from ganlib.spaces import load_space

    space = load_space("wgan_clip")
    settings = SweepSettings(space="wgan_clip", preset="smoke", name="hooked", tracking_uri="sqlite:///unused.db")
    base = {"loss": "wgan", "n_critic": 5, "lr_g": 1e-4, "lr_d": 1e-4, "optimizer": "rmsprop"}
    scores = {"t1": [3.0, 2.0, 1.5, 1.4], "t2": [4.0, 3.5, 3.4, 3.3]}
    results = [fake_result("t1", {**base, "clip": 0.01}, scores["t1"]),
               fake_result("t2", {**base, "clip": 0.5}, scores["t2"])]
    client, parent = tracked_sweep(tmp_path, scores)
    built = build_report(results, space, settings, {}, "w1", "no scheduler")
    summary = write_sweep_report(client, parent, built, results, space, [])
    artifacts = logged_artifacts(client, parent)
    page = artifacts["report/index.html"].decode()
    pngs = {path: data for path, data in artifacts.items() if path.endswith(".png")}
    assert "report/learning_curves_best.png" in pngs and "report/w1_vs_clip.png" in pngs
    assert len(pngs) == len(summary["searched"]) + 1  # a plot per searched field, and the curves
    tree = Tree(page).root
    embedded = {f.attrs["data-name"]: base64.b64decode(f.find("img")[0].attrs["src"].split(",", 1)[1])
                for f in tree.find("figure")}
    assert embedded == {path.removeprefix("report/"): data for path, data in pngs.items()}
    assert [tr.attrs["data-trial"] for tr in tree.find("table", id="trial-table")[0].find("tbody")[0].find("tr")] \
        == ["t1", "t2"]
    assert summary["best"]["trial_id"] == "t1" and "hooked" in tree.find("span", id="sweep-name")[0].text()


def test_learning_curves_come_from_the_trials_mlflow_runs(tmp_path):
    """Each best trial's curve is its run's metric history (Tune's result files lose rows when a
    trial restarts; the runs have one value per step), and a trial without a run has no curve."""
    from ganlib.report import logged_curves

    client, parent = tracked_sweep(tmp_path, {"t1": [3.0, math.nan, 1.5], "t2": [4.0, 3.5]})
    assert logged_curves(client, parent, ["t2", "t1", "gone"], "w1") == {
        "t2": [(10, 4.0), (20, 3.5)], "t1": [(10, 3.0), (30, 1.5)], "gone": []}
