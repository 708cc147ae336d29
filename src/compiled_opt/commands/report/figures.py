"""The report's figures, drawn with matplotlib's Agg canvas and returned as PNG bytes.

No pyplot: every figure is its own ``Figure`` object, so nothing global is touched and nothing
needs a display. Text from the run (symbols, model names) goes through ``plain``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from compiled_opt.commands.report.data import Comparison, JobReport

CONFIG, DEFAULTS, NAIVE, BEST, FAILED = "#1f77b4", "#7f7f7f", "#9467bd", "#ff7f0e", "#d62728"
BETTER, WORSE = "#2ca02c", "#d62728"
DPI = 96
LEGEND = (
    "trial",
    "off the scale",
    "best so far",
    "model defaults",
    "kept config",
    "failed",
)  # the trace's legend order


def plain(text: str) -> str:
    """``text`` as matplotlib shows it literally: a ``$`` would start mathtext (``$x^$`` fails to draw)."""
    return text.replace("$", r"\$")


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def job_figure(job: JobReport, comparison: Comparison) -> bytes:
    """The search trace (left) and, where this run scored the defaults, the kept config against them
    and against the naive forecast (right)."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    c = comparison
    if c.defaults_validation is None and c.defaults_test is None:
        _trace(fig.subplots(), job, c)
    else:
        trace, versus = fig.subplots(1, 2, width_ratios=(2.6, 1))
        _trace(trace, job, c)
        _versus(versus, c)
    return png(fig)


def _top(scores: Sequence[float], defaults: float | None) -> float | None:
    """An upper y-limit that keeps the best trials readable when a few score far worse (those are
    then drawn on the top edge); ``None`` when no trial is that far off."""
    s = np.asarray(scores)
    spread = np.quantile(s, 0.75) - s.min()
    if spread <= 0 or s.max() - s.min() <= 4 * spread:
        return None
    top = s.min() + 2.5 * spread
    return top if defaults is None else max(top, defaults + 0.3 * spread)


def _trace(ax, job: JobReport, comparison: Comparison) -> None:
    scored = [t for t in job.trials if t.score is not None]
    top = _top([t.score for t in scored], comparison.defaults_validation) if scored else None
    off = [t for t in scored if top is not None and t.score > top]
    fresh = [t for t in scored if not t.cached and t not in off]
    cached = [t for t in scored if t.cached and t not in off]
    if fresh:
        ax.errorbar(
            [t.trial for t in fresh],
            [t.score for t in fresh],
            yerr=[t.sem or 0.0 for t in fresh],
            fmt="o",
            ms=4,
            color=CONFIG,
            ecolor=CONFIG,
            elinewidth=1,
            capsize=2,
            label="trial (± sem over runs)",
        )
    if cached:
        ax.plot(
            [t.trial for t in cached],
            [t.score for t in cached],
            "o",
            ms=6,
            mfc="none",
            color=CONFIG,
            label="trial (cached score)",
        )
    if scored:
        best = np.minimum.accumulate([t.score for t in scored])
        ax.step([t.trial for t in scored], best, where="post", color=BEST, lw=1.8, label="best so far")
    if comparison.defaults_validation is not None:
        ax.axhline(comparison.defaults_validation, color=DEFAULTS, ls="--", lw=1, label="model defaults")
    chosen = job.chosen
    picked = [t for t in scored if chosen is not None and json.loads(t.params) == chosen]
    if picked:
        ax.plot([picked[0].trial], [picked[0].score], "*", ms=14, color=BEST, mec="black", mew=0.6, label="kept config")
    if off:
        bottom = ax.get_ylim()[0]
        ax.set_ylim(bottom - 0.04 * (top - bottom), top)
        ax.plot(
            [t.trial for t in off],
            [top] * len(off),
            "^",
            ms=7,
            color=CONFIG,
            clip_on=False,
            label=f"off the scale ({len(off)}, up to {max(t.score for t in off):.4g})",
        )
    failed = [t for t in job.trials if t.score is None]
    if failed:
        top = ax.get_ylim()[1] if scored else 1.0
        ax.plot(
            [t.trial for t in failed],
            [top] * len(failed),
            "x",
            ms=7,
            mew=2,
            color=FAILED,
            clip_on=False,
            label=f"failed ({len(failed)})",
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("validation MAE")
    ax.set_title(plain(f"Search trace: {job.job}"), loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    if job.trials:
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(
            range(len(labels)), key=lambda i: (LEGEND.index(labels[i].split(" (")[0]), "cached" in labels[i])
        )
        ax.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncols=min(len(labels), 4),
            frameon=False,
        )
    else:
        ax.text(0.5, 0.5, "no trials logged", ha="center", va="center", transform=ax.transAxes)


def _versus(ax, c: Comparison) -> None:
    """Relative MAE against the model's defaults on validation and test: the kept config, the naive forecast."""
    groups = [
        ("validation", c.validation, c.defaults_validation, c.naive_validation, None),
        ("test", c.test, c.defaults_test, c.naive_test, c.test_se),
    ]
    ax.axhline(0, color=DEFAULTS, lw=1, ls="--")
    ax.set_title("MAE vs the model's defaults", loc="left", fontsize=11)
    shown = False
    for i, (_name, mine, defaults, naive, se) in enumerate(groups):
        if mine is None or not defaults:
            ax.text(
                i,
                0.5,
                "not scored\nin this run",
                ha="center",
                va="center",
                fontsize=8,
                color=DEFAULTS,
                transform=ax.get_xaxis_transform(),
            )
            continue
        shown = True
        rel = 100 * (mine / defaults - 1)
        ax.bar(i - 0.18, rel, 0.34, color=CONFIG, yerr=None if se is None else 100 * se, capsize=3)
        if naive is not None:
            ax.bar(i + 0.18, 100 * (naive / defaults - 1), 0.34, color=NAIVE)
    ax.set_xticks([0, 1], ["validation", "test"])
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylabel("% change of MAE (below 0: better)")
    ax.grid(axis="y", alpha=0.3)
    if shown:
        ax.legend(
            handles=[Patch(color=CONFIG, label="kept config (test: ± SE)"), Patch(color=NAIVE, label="naive forecast")],
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncols=2,
            frameon=False,
        )


def skill_scatter(jobs: Sequence[JobReport]) -> bytes | None:
    """Skill against the naive forecast on validation (x) and test (y), one point per finished job."""
    points = [
        (j, j.outcome.kept_validation.skill, j.outcome.test.skill)
        for j in jobs
        if j.outcome is not None and j.outcome.kept_validation.skill is not None and j.outcome.test.skill is not None
    ]
    if not points:
        return None
    fig = Figure(figsize=(4.9, 4.6), layout="constrained")
    ax = fig.subplots()
    xs, ys = np.array([p[1] for p in points]), np.array([p[2] for p in points])
    for model in sorted({p[0].job.model for p in points}):
        mine = [p for p in points if p[0].job.model == model]
        ax.plot([p[1] for p in mine], [p[2] for p in mine], "o", ms=6, alpha=0.85, label=plain(model))
    if len(points) <= 60:
        for j, x, y in points:
            ax.annotate(plain(j.job.symbol), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=8)
    lo, hi = min(xs.min(), ys.min(), 0.0), max(xs.max(), ys.max(), 0.0)
    pad = 0.08 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color=DEFAULTS, lw=1, ls=":", label="test = validation")
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("validation skill (1 - MAE / naive MAE)")
    ax.set_ylabel("test skill")
    ax.set_title("Validation vs test: skill against the naive forecast", loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return png(fig)


def change_bars(jobs: Sequence[JobReport]) -> bytes | None:
    """Each job's test MAE change against the model's defaults, with its paired standard error."""
    rows = [(j, j.outcome.out_of_sample) for j in jobs if j.outcome is not None]
    if not rows:
        return None
    rows.sort(key=lambda r: r[1].change)
    fig = Figure(figsize=(6.4, 1.3 + 0.3 * len(rows)), layout="constrained")
    ax = fig.subplots()
    change = np.array([100 * o.change for _, o in rows])
    se = np.array([100 * o.relative_se for _, o in rows])
    y = np.arange(len(rows))
    ax.barh(y, change, xerr=se, color=[BETTER if c < 0 else WORSE for c in change], capsize=3, height=0.6)
    ax.set_yticks(y, [plain(f"{j.job.symbol} · {j.job.model}") for j, _ in rows], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.axvline(change.mean(), color=DEFAULTS, ls="--", lw=1, label=f"mean {change.mean():+.2f}%")
    ax.set_xlabel("test MAE vs the model's defaults, % (± SE over windows; below 0: better)")
    ax.set_title("Test change against the defaults", loc="left", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return png(fig)


def trial_times(jobs: Sequence[JobReport]) -> bytes | None:
    """Seconds per computed trial (cached and failed trials left out), one row of points per job."""
    rows = [(j, [t.latency_s for t in j.trials if t.score is not None and not t.cached]) for j in jobs]
    rows = [(j, times) for j, times in rows if times]
    if not rows:
        return None
    fig = Figure(figsize=(7.5, 1.3 + 0.3 * len(rows)), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)  # jitter only, for legibility
    for i, (_, times) in enumerate(rows):
        ax.plot(times, i + rng.uniform(-0.18, 0.18, len(times)), "o", ms=3, alpha=0.5, color=CONFIG)
        ax.plot([np.median(times)], [i], "|", ms=16, mew=2.5, color=BEST)
    ax.plot([], [], "|", ms=10, mew=2.5, color=BEST, label="median")
    ax.set_yticks(range(len(rows)), [plain(str(j.job)) for j, _ in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds per trial (all eval runs of one config)")
    ax.set_title("Time per trial", loc="left", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return png(fig)
