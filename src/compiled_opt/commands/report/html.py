"""``compiled-opt report``: one self-contained HTML file per run, every figure embedded as a PNG.

All text from the run (symbols, configs, reasons, errors) is escaped; the page loads nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

from compiled_opt.commands.report import figures
from compiled_opt.commands.report.data import Comparison, JobReport, RunReport, gather
from compiled_opt.commands.show import format_time, format_value
from compiled_opt.core.config import Config
from compiled_opt.core.metrics import Metric
from compiled_opt.core.registry import Plugins
from compiled_opt.run.console import DECISION_KEYS, metrics_table, out_of_sample_line
from compiled_opt.store.records import Stage
from compiled_opt.store.stores import atomic_write

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0;
       background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 28px 40px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 16px; margin: 0 0 6px; }
h4 { font-size: 13px; margin: 8px 0 4px; color: #555; text-transform: uppercase; }
.meta { color: #555; margin: 0 0 10px; } .note { color: #666; font-size: 13px; }
.oos { background: #eef4fb; border-left: 4px solid #1f77b4; padding: 6px 10px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e5e5e5; text-align: left; vertical-align: top; }
th { background: #f0f2f5; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.job { border: 1px solid #e2e2e2; border-radius: 6px; padding: 12px 14px; margin: 14px 0; }
.cols { display: flex; flex-wrap: wrap; gap: 24px; } .cols > div { flex: 1 1 300px; min-width: 0; }
.status { font-size: 12px; padding: 1px 7px; border-radius: 10px; background: #e8e8e8; margin-left: 6px;
          font-weight: normal; }
.s-tuned, .s-new, .s-improved, .s-pooled, .s-forced { background: #dff0d8; }
.s-kept-defaults, .s-no-improvement { background: #fcf3d9; } .s-failed, .s-interrupted { background: #f8d7da; }
.better { color: #1a7f37; } .worse { color: #c62828; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; }
code { font-size: 12px; word-break: break-word; }
"""


def write_report(config: Config, which: str, out: Path | None = None) -> Path:
    """Render run ``which`` (an id or ``latest``) of ``config`` to ``out`` (default: the run folder's report.html)."""
    report = gather(config, which, "RUN_ID")
    plugins = Plugins.load()
    page = render(report, {name: plugins.metrics.get(name) for name in plugins.metrics})
    out = Path(out) if out is not None else report.run_path / "report.html"
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out


def render(report: RunReport, metrics: Mapping[str, Metric] | None = None) -> str:
    """The page; ``metrics`` (the registered ones) name the test metrics and how to read them."""
    state, metrics = report.state, metrics or {}
    comparisons = {j.job: j.comparison() for j in report.jobs}
    line = out_of_sample_line([comparisons[j.job].test_change for j in report.searches])
    unfinished = sum(j.outcome is None for j in report.searches)
    if line and unfinished:
        line += f"; over the {len(report.searches) - unfinished} jobs that finished ({unfinished} did not)"
    parts = [
        f"<h1>compiled-opt run {escape(report.run_id)}</h1>",
        f'<p class="meta">started {escape(format_time(state.created_at))}'
        f" · compiled-opt {escape(state.engine_version or '?')}"
        f" · config {escape(state.config.path)} · run folder <code>{escape(str(report.run_path))}</code>"
        "</p>",
        f'<p class="oos">{escape(line)}</p>' if line else "",
        '<p class="note">Configs are chosen on the validation windows only; the test windows are reported here and'
        " never used to choose. Skill = 1 - MAE / MAE of the naive forecast (predicted return 0): above 0 beats it."
        "</p>",
        "<h2>Summary</h2>",
        _summary(report, comparisons),
        "<h2>Across symbols</h2>",
        _across(report),
        _metrics_across(report, metrics),
        "<h2>Per job</h2>",
        *(_job(j, comparisons[j.job], metrics) for j in report.jobs),
        "<h2>Config</h2>",
        f"<details><summary>the run's config file and command-line overrides</summary><pre>"
        f"{escape(state.config.text)}</pre><pre>{escape(json.dumps(state.config.overrides))}"
        "</pre></details>",
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>compiled-opt report {escape(report.run_id)}</title><style>{CSS}</style></head>"
        f"<body><main>\n{chr(10).join(p for p in parts if p)}\n</main></body></html>\n"
    )


def _summary(report: RunReport, comparisons: Mapping[str, Comparison]) -> str:
    head = ("Job", "Status", "Trials", "Failed", "Cached", "Val MAE", "Test MAE", "Test skill", "Test vs defaults")
    rows = []
    for j in report.jobs:
        c = comparisons[j.job]
        skill = j.outcome.test.skill if j.outcome else None
        rows.append(
            [
                f'<a href="#{_anchor(j.job)}">{escape(str(j.job))}</a>',
                _status(j.status),
                *(
                    _num(n)
                    for n in (len(j.trials), sum(t.score is None for t in j.trials), sum(t.cached for t in j.trials))
                ),
                _num(c.validation),
                _num(c.test),
                _num(skill, "+.4f"),
                _change(c.test_change, c.test_se),
            ]
        )
    return _table(head, rows, numeric_from=2)


def _across(report: RunReport) -> str:
    figs = [
        (figures.skill_scatter(report.searches), "validation vs test skill per symbol"),
        (figures.change_bars(report.searches), "test MAE change against the model's defaults per symbol"),
        (figures.trial_times(report.jobs), "seconds per trial per job"),
    ]
    shown = [_img(data, alt) for data, alt in figs if data is not None]
    if not shown:
        return '<p class="note">No job of this run finished: nothing to compare across symbols.</p>'
    return f'<div class="figs">{"".join(shown)}</div>'


def _metrics_across(report: RunReport, metrics: Mapping[str, Metric]) -> str:
    """Every metric across the run's finished jobs, as the run's summary shows it."""
    table = metrics_table([j.outcome.out_of_sample.metrics for j in report.searches if j.outcome], metrics)
    if table is None:
        return ""
    rows = [[escape(str(cell)) for cell in row] for row in zip(*(c.cells for c in table.columns), strict=True)]
    return "<h3>Test metrics across symbols</h3>" + _table([c.header for c in table.columns], rows, numeric_from=1)


def _job_metrics(j: JobReport, metrics: Mapping[str, Metric]) -> str:
    """Every metric of the kept config on the test windows, against the defaults and the naive forecast."""
    found = j.outcome.out_of_sample.metrics if j.outcome else {}
    rows = [
        [
            escape(name),
            *(_num(metric.shown(getattr(c, k))) for k in ("config", "defaults", "naive")),
            f"{_num(metric.shown(c.config) - metric.shown(c.defaults), '+.4g')} ± {_num(c.se, '.2g')}",
        ]
        for name, metric in metrics.items()
        for c in [found.get(name)]
        if c is not None
    ]
    if not rows:
        return ""
    return "<h4>Test metrics</h4>" + _table(
        ("metric", "kept config", "defaults", "naive", "vs defaults (± SE)"), rows, numeric_from=1
    )


def _job(j: JobReport, c: Comparison, metrics: Mapping[str, Metric]) -> str:
    heading = (
        f"{escape(j.job.symbol)} · {escape(j.job.model)}"
        if j.job.stage is Stage.SEARCH
        else f"pooled stage · {escape(j.job.model)}"
    )
    return (
        f'<section class="job" id="{_anchor(j.job)}"><h3>{heading}{_status(j.status)}</h3>'
        f"{_img(figures.job_figure(j, c), f'search trace of {j.job}')}"
        f'<div class="cols"><div><h4>Decision</h4>{_decision(j)}</div>'
        f"<div><h4>Errors (MAE)</h4>{_errors(c)}{_job_metrics(j, metrics)}</div>"
        f"<div><h4>Kept config</h4>{_params(j.chosen)}</div></div></section>"
    )


def _decision(j: JobReport) -> str:
    if j.error:
        return f"<p>Failed:</p><pre>{escape(j.error)}</pre>"
    if j.outcome is None:
        return "<p>The run stopped before this job finished: only its logged trials are shown.</p>"
    d = j.outcome.decision
    verdict = "accepted" if d.accepted else "rejected"
    text = f"<p><b>{verdict}</b> by <code>{escape(d.policy)}</code>: {escape(d.reason)}</p>"
    text += f'<p class="note">{escape(j.status)}: {escape(j.status.meaning)}</p>'
    stats = {**d.stats, "resolution_se": d.resolution_se}
    keys = [k for k in DECISION_KEYS if stats.get(k) is not None]
    keys += [k for k in stats if k not in keys and k != "seeds" and not isinstance(stats[k], (dict, list))]
    if d.options:
        text += f'<p class="note">options: <code>{escape(json.dumps(d.options))}</code></p>'
    if d.pooled_gate:
        text += f'<p class="note">against the pooled config: p = {_num(d.pooled_gate.p_value, ".3g")}</p>'
    return text + (
        _table(("statistic", "value"), [[escape(k), _num(stats[k])] for k in keys], numeric_from=1) if keys else ""
    )


def _errors(c: Comparison) -> str:
    rows = [
        ["kept config", _num(c.validation), _num(c.test)],
        ["model defaults", _num(c.defaults_validation), _num(c.defaults_test)],
        ["naive forecast", _num(c.naive_validation), _num(c.naive_test)],
    ]
    table = _table(("", "validation", "test"), rows, numeric_from=1)
    return table + (
        f"<p>test vs defaults: {_change(c.test_change, c.test_se)}</p>"
        if c.test_change is not None
        else '<p class="note">"-": not scored in this run.</p>'
    )


def _params(params: Mapping[str, Any] | None) -> str:
    if not params:
        return "<p>-</p>"
    return _table(
        ("parameter", "value"), [[escape(k), escape(format_value(v))] for k, v in params.items()], numeric_from=1
    )


# --- small pieces ---------------------------------------------------------------------------------


def _table(head: Iterable[str], rows: Iterable[list[str]], numeric_from: int) -> str:
    """Cells are HTML already (escaped by the caller); columns from ``numeric_from`` are right-aligned."""

    def cls(i: int) -> str:
        return ' class="num"' if i >= numeric_from else ""

    top = "".join(f"<th{cls(i)}>{escape(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{cell}</td>" for i, cell in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{top}</tr></thead><tbody>{body}</tbody></table>"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _slug(text: str) -> str:
    """``text`` as a safe id or class name: letters and digits, anything else a dash."""
    return "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in text)


def _anchor(job: Any) -> str:
    return f"job-{_slug(str(job))}"


def _status(status: str) -> str:
    return f'<span class="status s-{_slug(status)}">{escape(status)}</span>'


def _num(value: Any, spec: str = ".6g") -> str:
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    return escape(format(value, spec) if isinstance(value, float) else str(value))


def _change(change: float | None, se: float | None) -> str:
    if change is None:
        return "-"
    cls = "better" if change < 0 else "worse"
    return f'<span class="{cls}">{100 * change:+.2f}%</span>' + (f" ± {100 * se:.2f}%" if se is not None else "")
