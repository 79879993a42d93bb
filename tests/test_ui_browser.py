"""What a person sees in a browser: a real `mlflow server` on 127.0.0.1 holding a real smoke sweep,
looked at in headless Chromium (Debian's package, driven by Playwright; nothing downloaded).

* the training-runs view lists the sweep's parent run;
* the expanded parent shows its trials, with their `status` tag and the primary metric as columns;
* the compare view of two trials renders (parallel coordinates, run details, their tags);
* the report page (report/index.html) renders in MLflow's artifact viewer: table, sorting, plots.

Screenshots of each step are kept under $GANLIB_SCREENSHOTS (or the test's tmp folder, printed);
docs/images/ holds copies for the user guide. Without Chromium or Playwright every test here is
skipped with the install command (tests/browser.py), never passed.
"""

from __future__ import annotations

import math
import time

import browser as ui
import pytest
from servers import mlflow_server
from test_report_page import sample

from ganlib.report_page import render_report_page

SWEEP = "ui-smoke"


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    ui.require_browser()
    folder = ui.screenshots_dir(tmp_path_factory.mktemp("ui"))
    print(f"\nscreenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def sweep(shots, request, tmp_path_factory):
    """A real MLflow server holding one real smoke sweep of 4 trials (run in-process on local Ray)."""
    request.getfixturevalue("local_ray")  # only once the browser is known to be there
    from mlflow.tracking import MlflowClient

    from ganlib.settings import SweepSettings
    from ganlib.sweep import run_sweep

    folder = tmp_path_factory.mktemp("mlflow")
    with mlflow_server(folder) as (uri, _pid, _env):
        started = time.time()
        summary = run_sweep(SweepSettings(space="wgan_clip", preset="smoke", num_trials=4, device="cpu",
                                          tracking_uri=uri, storage_path=str(folder / "ray"), name=SWEEP))
        print(f"sweep: {time.time() - started:.0f} s, {summary['by_status']}")
        client = MlflowClient(uri)
        children = client.search_runs([summary["experiment_id"]],
                                      filter_string=f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}'")
        yield {"base": uri.rstrip("/"), "summary": summary, "children": children,
               "experiment_id": summary["experiment_id"], "parent_run_id": summary["parent_run_id"]}


def test_the_report_page_sorts_and_shows_its_plots_offline(shots, tmp_path):
    """The page alone, as a downloaded file: nothing requested, numbers sort as numbers."""
    summary, rows, images = sample()
    path = tmp_path / "index.html"
    path.write_text(render_report_page(summary, rows, images))
    with ui.open_page(tmp_path / "profile", {"width": 1400, "height": 900}) as page:
        page.goto(path.as_uri())
        _check_report(page.main_frame, n_trials=len(rows), n_images=len(images), min_width=1)
        page.locator("#trials").scroll_into_view_if_needed()
        ui.shot(page, shots, "report-offline-sorted")
        assert page.external == []


@pytest.mark.slow  # a real MLflow server and a real sweep: over 2 minutes with the module's setup
def test_the_training_runs_view_lists_the_sweep(sweep, shots, tmp_path):
    with ui.open_page(tmp_path / "profile") as page:
        page.goto(ui.runs_url(sweep["base"], sweep["experiment_id"]))
        page.get_by_text(SWEEP, exact=True).first.wait_for()
        ui.close_assistant(page)
        assert page.get_by_text("Training runs", exact=True).first.is_visible()
        names = [ui.run_name_of(r) for r in ui.grid_rows(page)]
        assert names.count(SWEEP) == 1, names
        assert not any(name.startswith("wgan ") for name in names)  # children stay folded under it
        ui.shot(page, shots, "mlflow-01-training-runs")
        assert page.external == []


@pytest.mark.slow  # a real MLflow server and a real sweep: over 2 minutes with the module's setup
def test_the_expanded_sweep_shows_its_trials_with_status_and_primary_metric(sweep, shots, tmp_path):
    from mlflow.tracking import MlflowClient

    children = {c.info.run_name: c for c in sweep["children"]}
    primary = sweep["summary"]["primary"]
    assert len(children) == 4
    with ui.open_page(tmp_path / "profile") as page:
        # Filtered to this sweep through the URL (the filter box's own URL state).
        page.goto(ui.runs_url(sweep["base"], sweep["experiment_id"], searchFilter=f"tags.sweep_name = '{SWEEP}'"))
        page.get_by_text(SWEEP, exact=True).first.wait_for()
        ui.close_assistant(page)
        ui.expand(page, SWEEP)
        page.get_by_text(next(iter(children)), exact=True).first.wait_for()
        ui.add_column(page, "Tags", "status")
        ui.add_column(page, "Metrics", primary)
        page.locator(f"[role=columnheader][col-id='metrics.`{primary}`']").wait_for()
        rows = {ui.run_name_of(r): r for r in ui.grid_rows(page)}
        assert set(rows) == {SWEEP, *children}, rows.keys()
        for name, child in children.items():
            assert rows[name]["tags.`status`"] == child.data.tags["status"]
            assert math.isclose(float(rows[name][f"metrics.`{primary}`"]), child.data.metrics[primary], rel_tol=1e-9)
        parent = MlflowClient(sweep["base"]).get_run(sweep["parent_run_id"])
        assert parent.data.tags["status"] == "finished"  # the sweep's own state, set when it closed
        assert rows[SWEEP]["tags.`status`"] == "finished"
        ui.shot(page, shots, "mlflow-02-sweep-expanded")
        assert page.external == []


@pytest.mark.slow  # a real MLflow server and a real sweep: over 2 minutes with the module's setup
def test_the_compare_view_of_two_trials_renders(sweep, shots, tmp_path):
    first, second = sorted(sweep["children"], key=lambda c: c.info.run_name)[:2]
    primary = sweep["summary"]["primary"]
    with ui.open_page(tmp_path / "profile") as page:
        page.goto(ui.runs_url(sweep["base"], sweep["experiment_id"]))
        page.get_by_text(SWEEP, exact=True).first.wait_for()
        ui.close_assistant(page)
        ui.expand(page, SWEEP)
        for child in (first, second):
            row = ui.row_of(page, child.info.run_name)
            row.wait_for()
            row.locator("input.ag-checkbox-input").click()
        page.get_by_role("button", name="Compare", exact=True).click()
        page.get_by_text("Comparing 2 Runs from 1 Experiment").wait_for()
        assert "#/compare-runs?runs=" in page.url
        assert first.info.run_id in page.url and second.info.run_id in page.url
        page.get_by_text("Parallel Coordinates Plot").first.wait_for()
        plot = page.locator(".js-plotly-plot").first
        plot.wait_for()
        assert plot.locator("svg").count() >= 1 and plot.bounding_box()["height"] > 100
        assert ui.plot_axis_labels(page)  # MLflow's own pick: 3 differing params and the first metric logged
        ui.compare_metric(page, primary)  # what a person looks at: the primary metric against the params
        page.wait_for_function("m => Array.from(document.querySelectorAll('.js-plotly-plot text.axis-title'))"
                               ".some(t => t.textContent === m)", arg=primary)
        labels = ui.plot_axis_labels(page)
        assert labels[-1] == primary and set(labels[:-1]) <= set(sweep["summary"]["searched"]), labels
        body = page.inner_text("body")
        for child in (first, second):
            assert child.info.run_name in body and child.info.run_id in body
        ui.shot(page, shots, "mlflow-03-compare-two-trials")
        tags = page.get_by_text("Tags", exact=True).last  # the run details' tags: status side by side
        tags.scroll_into_view_if_needed()
        status_row = page.locator("tr", has=page.get_by_text("status", exact=True)).last
        assert sorted(status_row.inner_text().split()[1:]) == sorted(c.data.tags["status"] for c in (first, second))
        assert page.external == []


@pytest.mark.slow  # a real MLflow server and a real sweep: over 2 minutes with the module's setup
def test_the_report_page_renders_in_mlflows_artifact_viewer(sweep, shots, tmp_path):
    summary = sweep["summary"]
    url = (f"{sweep['base']}/#/experiments/{sweep['experiment_id']}/runs/{sweep['parent_run_id']}"
           "/artifacts/report/index.html")
    with ui.open_page(tmp_path / "profile") as page:
        page.goto(url)
        ui.close_assistant(page)
        iframe = page.locator("iframe.mlflow-html-iframe")
        iframe.wait_for()
        assert iframe.get_attribute("sandbox") == "allow-scripts"  # scripts run, nothing else is allowed
        frame = iframe.element_handle().content_frame()
        frame.wait_for_selector("#trial-table")
        assert frame.url.startswith("blob:")
        _check_report(frame, n_trials=summary["trials"], n_images=len(summary["searched"]) + 1)
        assert frame.inner_text("#sweep-name") == SWEEP
        if "best" in summary:
            assert summary["best"]["trial_id"] in frame.inner_text("#best")
        frame.evaluate("window.scrollTo(0, 0)")
        ui.shot(page, shots, "mlflow-04-report-in-artifact-viewer")
        frame.locator("#trials").scroll_into_view_if_needed()
        ui.shot(page, shots, "mlflow-05-report-trial-table")
        frame.locator("#sensitivity").scroll_into_view_if_needed()
        ui.shot(page, shots, "mlflow-06-report-plots")
        assert page.external == []


def _check_report(frame, n_trials: int, n_images: int, min_width: int = 100) -> None:
    """The table has every trial; clicking a numeric header sorts numerically, missing values last;
    every plot is decoded by the browser."""
    assert frame.locator("#trial-table tbody tr").count() == n_trials
    images = frame.evaluate("() => Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(images) == n_images and all(done and width >= min_width for done, width in images), images
    header = frame.locator("#trial-table th[data-key='best_score']")
    column = frame.evaluate("() => Array.from(document.querySelectorAll('#trial-table th')).findIndex("
                            "th => th.dataset.key === 'best_score')")

    def values() -> list[float]:
        raw = frame.evaluate(f"() => Array.from(document.querySelectorAll('#trial-table tbody tr')).map("
                             f"tr => tr.cells[{column}].getAttribute('data-sort'))")
        return [float(v) if v else math.nan for v in raw]

    for click, direction in ((1, "ascending"), (2, "descending")):
        header.click()
        assert header.get_attribute("aria-sort") == direction, click
        got = values()
        present = [v for v in got if not math.isnan(v)]
        assert present == sorted(present, reverse=direction == "descending")
        assert all(math.isnan(v) for v in got[len(present):])  # NaN (unhealthy trials) stay last
    header.click()  # back to ascending, best first, for the screenshots
