"""The sweep report as one self-contained HTML page (``report/index.html`` on the parent run).

``render_report_page(summary, rows, images)`` is pure: it takes the report's summary and rows
(``report.build_report``) and the PNG bytes of its plots, and returns a page that needs nothing
else: inline CSS, one inline script (the sortable table), the plots as ``data:image/png`` URIs,
no external script, stylesheet, font or image. MLflow's artifact viewer shows an ``.html``
artifact from a blob URL in an iframe sandboxed with ``allow-scripts`` only, so nothing relative
could load there anyway; the same file opens offline from a download.

Every piece of text is escaped: trial reasons come from exceptions, names from the command line.
"""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

# The plot colours of report._param_plot, so a status reads the same in the table and the plots.
STATUS_COLOURS = {"completed": "#1f77b4", "stopped_early": "#7f7f7f", "stalled": "#2ca02c",
                  "collapsed": "#d62728", "diverged": "#9467bd", "error": "#5a1010", "interrupted": "#ff7f0e",
                  "running": "#17becf"}
# Columns shown first in the trial table, in this order; the rest follow as the rows hold them.
LEADING_COLUMNS = ("rank", "trial_id", "status", "best_score", "best_step", "steps_run", "critic_steps",
                   "trial_seconds", "reason")
# The confirmation section (a hook for the confirmation stage): the columns it renders, and the
# keys of a confirmation row each one is read from (the first present wins).
CONFIRMATION_COLUMNS = (("configuration", ("configuration", "config", "trial_id")),
                        ("seeds", ("seeds", "n_seeds")),
                        ("mean", ("mean",)), ("std", ("std",)),
                        ("interval", ("interval", "ci", "confidence_interval")))

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0;
       padding: 16px 20px 40px; color: #1b1f23; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 14px; margin: 14px 0 6px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.muted { color: #57606a; }
.badges { margin: 8px 0; display: flex; flex-wrap: wrap; gap: 6px; }
.badge { display: inline-block; padding: 2px 9px; border-radius: 10px; color: #fff; font-weight: 600;
         font-size: 12.5px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 8px 0; }
dl.facts dt { color: #57606a; }
dl.facts dd { margin: 0; }
.scroll { overflow-x: auto; width: fit-content; max-width: 100%; border: 1px solid #d0d7de; border-radius: 6px; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eaeef2; text-align: left; vertical-align: top;
         white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.reason { white-space: normal; min-width: 16em; max-width: 32em; overflow-wrap: anywhere; }
thead th { background: #f6f8fa; position: sticky; top: 0; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th:hover { background: #eaeef2; }
table.sortable thead th::after { content: " \\2195"; color: #8c959f; font-weight: normal; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\25B2"; color: #1b1f23; }
table.sortable thead th[aria-sort="descending"]::after { content: " \\25BC"; color: #1b1f23; }
tbody tr:hover { background: #f6f8fa; }
tr.best td { background: #fff8c5; }
td.status { color: #fff; font-weight: 600; }
table.plain td, table.plain th { border-bottom: 1px solid #eaeef2; }
.figures { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #57606a; margin-top: 4px; }
details summary { cursor: pointer; color: #0969da; margin: 6px 0; }
footer { margin-top: 32px; font-size: 12px; color: #57606a; }
"""

# Click (or Enter on) a header: sort by that column, again to reverse. Numbers compare as
# numbers (``data-sort`` holds the raw value); empty and NaN cells stay last either way.
_SORT_JS = """
(function () {
  function value(cell) {
    var raw = cell.getAttribute("data-sort");
    return raw === null ? cell.textContent.trim() : raw;
  }
  function sortTable(table, column, header) {
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var numeric = header.getAttribute("data-type") === "number";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a.cells[column]), y = value(b.cells[column]);
      if (numeric) {
        x = parseFloat(x); y = parseFloat(y);
        var xMissing = isNaN(x), yMissing = isNaN(y);
        if (xMissing || yMissing) { return xMissing === yMissing ? 0 : (xMissing ? 1 : -1); }
        return ascending ? x - y : y - x;
      }
      if (x === "" || y === "") { return x === y ? 0 : (x === "" ? 1 : -1); }
      return ascending ? x.localeCompare(y) : y.localeCompare(x);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(header.parentNode.cells, function (th) { th.setAttribute("aria-sort", "none"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.tabIndex = 0;
      if (!header.hasAttribute("aria-sort")) { header.setAttribute("aria-sort", "none"); }
      header.addEventListener("click", function () { sortTable(table, column, header); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortTable(table, column, header); }
      });
    });
  });
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any) -> str:
    """A cell's text: 4 significant digits for floats, separators for large ints, '' for none/NaN."""
    if _missing(value):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _status_badge(status: str, text: str) -> str:
    colour = STATUS_COLOURS.get(status, "#57606a")
    return f'<span class="badge status-{_e(status)}" style="background:{colour}">{_e(text)}</span>'


def _js_number(value: float) -> str:
    """What the page's parseFloat reads back: Python writes inf as 'inf', JavaScript reads 'Infinity'."""
    return ("Infinity" if value > 0 else "-Infinity") if math.isinf(value) else repr(value)


def _cell(value: Any, numeric: bool, extra_class: str = "") -> str:
    classes = " ".join(c for c in (("num" if numeric else ""), extra_class) if c)
    cls = f' class="{classes}"' if classes else ""
    if numeric:
        raw = "" if _missing(value) or not _is_number(value) else _js_number(float(value))
        return f'<td{cls} data-sort="{_e(raw)}">{_e(_fmt(value))}</td>'
    return f"<td{cls}>{_e(_fmt(value))}</td>"


def _table(headers: list[str], body: list[list[Any]], numeric: list[bool], table_id: str = "",
           css: str = "plain") -> str:
    id_attr = f' id="{_e(table_id)}"' if table_id else ""
    head = "".join(f'<th class="num" data-type="number">{_e(h)}</th>' if n else f"<th>{_e(h)}</th>"
                   for h, n in zip(headers, numeric, strict=True))
    lines = ["".join(_cell(v, n) for v, n in zip(row, numeric, strict=True)) for row in body]
    rows = "".join(f"<tr>{line}</tr>" for line in lines)
    return f'<div class="scroll"><table{id_attr} class="{css}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>' \
           "</table></div>"


# -- sections --------------------------------------------------------------------------------------
def _header(summary: dict[str, Any]) -> str:
    name = summary.get("name", "(unnamed sweep)")
    by_status = summary.get("by_status") or {}
    badges = "".join(_status_badge(s, f"{n} {s}") for s, n in by_status.items())
    facts = [("trials", summary.get("trials", "")), ("primary metric", summary.get("primary", "")),
             ("schedule", summary.get("schedule", "")),
             ("searched", ", ".join(map(str, summary.get("searched") or [])))]
    if "optuna_trials" in summary:
        facts.append(("told to Optuna", f"{summary['optuna_trials']} trials"))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_fmt(v))}</dd>" for k, v in facts if not _missing(v))
    return (f'<header><h1>Sweep <span id="sweep-name">{_e(name)}</span></h1>'
            f'<div class="badges" id="status-counts">{badges}</div><dl class="facts">{dl}</dl></header>')


def _best(summary: dict[str, Any]) -> str:
    best = summary.get("best")
    if not best:
        return '<section id="best"><h2>Best configuration</h2><p>No healthy trial: no best configuration.</p></section>'
    searched = [str(s) for s in summary.get("searched") or []]
    config = best.get("config") or {}
    chosen = [(k, config[k]) for k in searched if k in config and not _missing(config[k])]
    chosen_keys = {k for k, _ in chosen}
    fixed = [(k, v) for k, v in config.items() if k not in chosen_keys]
    facts = [("trial", best.get("trial_id", "")), ("status", best.get("status", "")),
             ("score", _fmt(best.get("score"))), ("score is", best.get("score_of", "")),
             ("best reached at step", _fmt(best.get("best_step"))),
             ("weights", f"{best.get('weights', '')} of the trial's child run")]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if not _missing(v))
    searched_table = _table(["searched hyperparameter", "value"], [[k, _fmt(v)] for k, v in chosen], [False, False])
    fixed_table = _table(["setting", "value"], [[k, _fmt(v)] for k, v in fixed], [False, False])
    return (f'<section id="best"><h2>Best configuration</h2><dl class="facts">{dl}</dl>{searched_table}'
            f"<details><summary>the other settings of this trial ({len(fixed)})</summary>{fixed_table}</details>"
            "</section>")


def _confirmation_value(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in row:
            value = row[key]
            if isinstance(value, dict):
                return " ".join(f"{k}={_fmt(v)}" for k, v in value.items())
            if key == "interval" or key in ("ci", "confidence_interval"):
                if isinstance(value, (list, tuple)) and len(value) == 2:
                    return f"[{_fmt(value[0])}, {_fmt(value[1])}]"
            return value
    return None


def confirmation_section(confirmation: Any) -> str:
    """The hook for the confirmation stage: ``summary["confirmation"]`` rendered as a table of
    configuration, seeds, mean, std and interval, one line per confirmed configuration.

    Accepted shapes: a list of row dicts, or a dict with such a list under ``"rows"`` (its other
    scalar entries are shown above the table, e.g. ``{"metric": "w1", "level": 0.95, "rows": [...]}``).
    A row's ``configuration`` (or ``config``, else ``trial_id``) may be a dict, shown as
    ``k=v`` pairs; ``seeds`` a list or a count; ``interval`` a ``[low, high]`` pair or text. Keys
    beyond these are shown in further columns. Empty or missing: no section."""
    notes: dict[str, Any] = {}
    rows = confirmation
    if isinstance(confirmation, dict):
        rows = confirmation.get("rows") or []
        notes = {k: v for k, v in confirmation.items() if k != "rows" and not isinstance(v, (list, dict))}
    if not rows:
        return ""
    rows = [r if isinstance(r, dict) else {"configuration": r} for r in rows]
    known = {k for _, keys in CONFIRMATION_COLUMNS for k in keys}
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in known))
    headers = [name for name, _ in CONFIRMATION_COLUMNS] + extra
    body = [[_confirmation_value(r, keys) for _, keys in CONFIRMATION_COLUMNS] + [r.get(k) for k in extra]
            for r in rows]
    numeric = [all(_is_number(row[i]) or _missing(row[i]) for row in body) and
               any(_is_number(row[i]) for row in body) for i in range(len(headers))]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_fmt(v))}</dd>" for k, v in notes.items())
    return (f'<section id="confirmation"><h2>Confirmation on fresh seeds</h2>'
            f'{f"<dl class=facts>{dl}</dl>" if dl else ""}'
            f'{_table(headers, body, numeric, "confirmation-table", "plain sortable")}</section>')


def _work(summary: dict[str, Any]) -> str:
    work = summary.get("work") or {}
    if not work:
        return ""
    kinds = ("trials", "seconds", "generator_steps", "critic_steps")
    body = [["done", status, *(d.get(k) for k in kinds)] for status, d in (work.get("done") or {}).items()]
    body += [["saved (estimated)", cause, *(s.get(k) for k in kinds)]
             for cause, s in (work.get("saved") or {}).items()]
    total, saved = work.get("total_done") or {}, work.get("total_saved") or {}
    body.append(["done", "total", None, *(total.get(k) for k in kinds[1:])])
    body.append(["saved (estimated)", "total", None, *(saved.get(k) for k in kinds[1:])])
    fraction = work.get("saved_fraction") or {}
    body.append(["saved / (done + saved)", "", None,
                 *(f"{fraction[k]:.0%}" if _is_number(fraction.get(k)) else "" for k in kinds[1:])])
    headers = ["work", "by status or stop cause", "trials", "trial seconds", "generator steps", "critic steps"]
    table = _table(headers, body, [False, False, True, True, True, True], "work-table")
    return ('<section id="work"><h2>Work done, and saved by stopping early</h2>'
            '<p class="muted">Saved work is estimated per stopped trial as its remaining steps at its own measured '
            "rate, by what stopped it (a scheduler rung, a collapse or divergence, a stall).</p>"
            f"{table}</section>")


def _columns(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(columns shown, columns left out because every trial has nothing in them)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    ordered = [k for k in LEADING_COLUMNS if k in keys or k == "rank"] + [k for k in keys if k not in LEADING_COLUMNS]
    shown = [k for k in ordered if k == "rank" or any(not _missing(row.get(k)) for row in rows)]
    return shown, [k for k in ordered if k not in shown]


def _trials(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<section id="trials"><h2>Trials</h2><p>No trial ran.</p></section>'
    ranked = [str(t) for t in summary.get("ranked") or []]
    rank = {trial: i + 1 for i, trial in enumerate(ranked)}
    best_id = (summary.get("best") or {}).get("trial_id")
    ordered = sorted(rows, key=lambda r: (rank.get(str(r.get("trial_id")), len(rank) + 1),))
    rows = [{"rank": rank.get(str(r.get("trial_id"))), **r} for r in ordered]
    shown, empty = _columns(rows)
    numeric = {k: any(_is_number(r.get(k)) for r in rows) and
               all(_is_number(r.get(k)) or _missing(r.get(k)) for r in rows) for k in shown}
    sorted_by = {"rank": ' aria-sort="ascending"'}  # the rows come ranked
    head = "".join(f'<th class="num" data-type="number" data-key="{_e(k)}"{sorted_by.get(k, "")}>{_e(k)}</th>'
                   if numeric[k] else f'<th data-key="{_e(k)}">{_e(k)}</th>' for k in shown)
    lines = []
    for row in rows:
        cells = []
        for k in shown:
            value = row.get(k)
            if k == "status":
                colour = STATUS_COLOURS.get(str(value), "#57606a")
                cells.append(f'<td class="status status-{_e(value)}" style="background:{colour}">{_e(value)}</td>')
            else:
                cells.append(_cell(value, numeric[k], "reason" if k == "reason" else ""))
        best = ' class="best"' if best_id is not None and row.get("trial_id") == best_id else ""
        lines.append(f'<tr{best} data-trial="{_e(row.get("trial_id", ""))}">{"".join(cells)}</tr>')
    note = (f'<p class="muted">Columns empty for every trial are left out: {_e(", ".join(empty))}.</p>'
            if empty else "")
    return ('<section id="trials"><h2>Trials</h2>'
            '<p class="muted">Click a column header to sort (again to reverse). Rank is by best score among '
            "healthy trials (completed, stopped by a rung, stalled); the best trial is highlighted. The same "
            "table is <code>trials.csv</code> / <code>trials.parquet</code> beside this page.</p>"
            f'<div class="scroll"><table id="trial-table" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(lines)}</tbody></table></div>{note}</section>')


def _figure(name: str, data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure data-name="{_e(name)}"><img alt="{_e(name)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{_e(name)}</figcaption></figure>")


def _plots(summary: dict[str, Any], images: dict[str, bytes]) -> str:
    primary = str(summary.get("primary", ""))
    sensitivity = {n: d for n, d in images.items() if "_vs_" in n}
    curves = {n: d for n, d in images.items() if n.startswith("learning_curves")}
    other = {n: d for n, d in images.items() if n not in sensitivity and n not in curves}
    out = []
    if sensitivity:
        out.append('<section id="sensitivity"><h2>Sensitivity</h2>'
                   f'<p class="muted">{_e(primary)} at each trial\'s last evaluation against each searched '
                   "hyperparameter, by status (lower is better).</p>"
                   f'<div class="figures">{"".join(_figure(n, d) for n, d in sensitivity.items())}</div></section>')
    if curves:
        out.append('<section id="curves"><h2>Learning curves of the best trials</h2>'
                   f'<div class="figures">{"".join(_figure(n, d) for n, d in curves.items())}</div></section>')
    if other:
        out.append('<section id="other-plots"><h2>Other plots</h2>'
                   f'<div class="figures">{"".join(_figure(n, d) for n, d in other.items())}</div></section>')
    return "".join(out)


def render_report_page(summary: dict[str, Any], rows: list[dict[str, Any]], images: dict[str, bytes]) -> str:
    """One self-contained HTML page: the sweep's header (name, counts by status, schedule), the
    best configuration and its score, the confirmation table when ``summary["confirmation"]`` is
    there, the work done and saved by stop cause, the sortable table of every trial, and the
    plots (``images``: file name -> PNG bytes; names with ``_vs_`` are sensitivity plots, names
    starting with ``learning_curves`` the learning curves)."""
    name = summary.get("name", "(unnamed sweep)")
    body = "".join([_header(summary), _best(summary), confirmation_section(summary.get("confirmation")),
                    _work(summary), _trials(summary, rows), _plots(summary, images)])
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Sweep {_e(name)}: report</title><style>{_CSS}</style></head>"
            f"<body>{body}<footer>Written by ganlib at the end of the sweep. Self-contained: it loads "
            "nothing from the network.</footer>"
            f"<script>{_SORT_JS}</script></body></html>\n")
