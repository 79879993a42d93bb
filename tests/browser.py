"""Headless Chromium for the browser tests: Debian's binary driven by Playwright, nothing
downloaded at run time, and helpers for what a person does in MLflow 3.17's UI.

* ``require_browser()`` skips (never passes) with the install command when Chromium or
  Playwright is missing; CI installs both.
* ``open_page(profile)`` starts Chromium with a fresh profile and the flags that stop it calling
  Google's hosts, and records every request that leaves 127.0.0.1 (``page.external``).
* ``screenshots_dir()`` is ``$GANLIB_SCREENSHOTS`` or a folder under the test's tmp dir.
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

CHROMIUM = os.environ.get("GANLIB_CHROMIUM", "/usr/bin/chromium")
INSTALL = ("apt-get install -y chromium && pip install playwright==1.65.2 "
           "(Playwright drives Debian's /usr/bin/chromium: run no 'playwright install')")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def require_browser() -> str:
    """The Chromium binary, or skip the test saying how to install what is missing."""
    missing = []
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        missing.append(f"no Chromium at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("no Playwright")
    if missing:
        pytest.skip(f"browser test: {' and '.join(missing)}; install with: {INSTALL}")
    return CHROMIUM


def screenshots_dir(tmp_root: Path) -> Path:
    folder = Path(os.environ.get("GANLIB_SCREENSHOTS") or tmp_root / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def open_page(profile: Path, viewport: dict[str, int] | None = None):
    """A page of a fresh headless Chromium (a new user, as a person opening the UI for the first
    time); ``page.external`` lists the URLs of requests that left 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    executable = require_browser()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport=viewport or VIEWPORT)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            page.external = []
            page.on("request", lambda r: page.external.append(r.url) if _leaves_machine(r.url) else None)
            yield page
        finally:
            context.close()


def _leaves_machine(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS


def shot(page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path


# -- MLflow 3.17's UI, as a person uses it ------------------------------------------------------------
def runs_url(base: str, experiment_id: str, **query: str) -> str:
    """The training-runs view (a new browser otherwise opens an experiment in the GenAI view)."""
    params = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return f"{base}/#/experiments/{experiment_id}/runs" + (f"?{params}" if params else "")


def close_assistant(page, wait_ms: int = 8000) -> None:
    """MLflow 3.17 opens its 'MLflow Assistant' side panel for a new browser, a moment after the
    page; close it as a person would (it takes a third of the width, and the runs table renders
    only the columns in view)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    close = page.get_by_role("button", name="Close", exact=True)
    panel = page.locator("div").filter(has=page.get_by_text("MLflow Assistant")).filter(has=close).last
    try:
        panel.wait_for(state="visible", timeout=wait_ms)
    except PlaywrightTimeout:
        return
    button = panel.get_by_role("button", name="Close", exact=True).last
    button.click()
    button.wait_for(state="hidden")


def grid_rows(page) -> list[dict[str, str]]:
    """The runs table as one dict per row, column id -> text (``attributes.`Run Name```,
    ``tags.`status```, ``metrics.`w1```...). AG Grid renders only the columns in view and splits a
    row into a pinned and a scrolled part sharing its row-index: scroll across and merge."""
    rows: dict[int, dict[str, str]] = {}
    scroller = page.locator(".ag-body-horizontal-scroll-viewport").first
    width, view = scroller.evaluate("e => [e.scrollWidth, e.clientWidth]")
    for left in [*range(0, max(width - view, 0), max(view // 2, 1)), max(width - view, 0)]:
        scroller.evaluate("(e, x) => { e.scrollLeft = x; }", left)
        page.wait_for_timeout(300)
        seen = page.evaluate("""() => Array.from(document.querySelectorAll('.ag-root [role=row][row-index]')).map(
          r => [Number(r.getAttribute('row-index')), Object.fromEntries(Array.from(
            r.querySelectorAll('[role=gridcell][col-id]')).map(c => [c.getAttribute('col-id'),
                                                                     c.innerText.trim()]))])""")
        for index, cells in seen:
            rows.setdefault(index, {}).update(cells)
    scroller.evaluate("e => { e.scrollLeft = 0; }")
    return [rows[i] for i in sorted(rows)]


def run_name_of(row: dict[str, str]) -> str:
    """The run name of a grid row (its cell also holds the run colour's hex code)."""
    return row.get("attributes.`Run Name`", "").splitlines()[-1:][0] if row.get("attributes.`Run Name`") else ""


def row_of(page, run_name: str):
    return page.locator(".ag-pinned-left-cols-container [role=row]", has=page.get_by_text(run_name, exact=True))


def expand(page, run_name: str) -> None:
    """Click the [+] before a parent run's name: its child runs appear below it."""
    row_of(page, run_name).locator("[col-id='attributes.`Run Name`'] button").first.click()


def add_column(page, group: str, name: str) -> None:
    """Columns > search ``name`` > tick it under ``group`` ('Metrics', 'Tags', 'Parameters')."""
    page.get_by_role("button", name="Columns", exact=True).click()
    page.get_by_placeholder("Search columns").fill(name)
    tree = page.get_by_test_id("column-selector-tree")
    tree.get_by_text(f"{group} (", exact=False).first.wait_for()
    tree.get_by_text(name, exact=True).first.click()
    page.keyboard.press("Escape")


def compare_metric(page, metric: str) -> None:
    """In the compare view's parallel-coordinates controls, show ``metric`` instead of the metric
    MLflow picked (the first one the runs logged). Choosing an option that is already selected
    would unselect it, so the metric is only chosen when it is not shown yet."""
    select = page.locator("div:text-is('Metrics:') + .du-bois-light-select")
    exact = re.compile(f"^{re.escape(metric)}$")
    if not select.locator(".du-bois-light-select-selection-item").filter(has_text=exact).count():
        select.click()
        page.keyboard.type(metric)
        page.locator(".du-bois-light-select-item-option").filter(has_text=exact).first.wait_for()
        page.keyboard.press("Enter")
    others = select.locator(".du-bois-light-select-selection-item").filter(
        has_not_text=re.compile(f"^{re.escape(metric)}$"))
    while others.count():
        others.first.locator(".du-bois-light-select-selection-item-remove").click()
    page.keyboard.press("Escape")


def plot_axis_labels(page) -> list[str]:
    """The axis titles of the parallel-coordinates plot (Plotly's SVG)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot text.axis-title'))
                              .map(t => t.textContent)""")
