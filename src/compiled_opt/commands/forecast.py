"""``compiled-opt forecast``: the next ``horizon`` steps of every symbol, with its tuned config.

For each symbol, the config it uses: with ``--model M`` the one stored for ``M``; otherwise the one
``best/`` chose among the config's models. A symbol with none uses the model's defaults (the first
configured model without ``--model``) and says so. Forecasting goes through the same backends as a
run: one ``encode`` and one ``sample`` per group of symbols sharing a config (their windows stacked),
``forecast.runs`` runs with seeds derived for the purpose, the config's aggregator on each run's
samples (the point forecast is the mean over runs, ``mc_se`` its Monte Carlo standard error) and the
``forecast.quantiles`` from all runs' samples (or from the predictive distribution itself, for a
backend with exact aggregates).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from compiled_opt.core.aggregate import quantile
from compiled_opt.core.backend import WindowBatch
from compiled_opt.core.config import Config
from compiled_opt.core.data import Series, next_window
from compiled_opt.core.errors import UsageError, did_you_mean
from compiled_opt.core.randomness import Draws, derive_seeds
from compiled_opt.core.registry import Plugins
from compiled_opt.run.plan import load_symbols
from compiled_opt.store.records import StoredRecord
from compiled_opt.store.stores import BEST, ConfigStore
from compiled_opt.tuning.jobs import WorkerSetup
from compiled_opt.tuning.models import ModelSpec, make_model_spec
from compiled_opt.tuning.search import params_key
from compiled_opt.tuning.worker import Worker

OUTPUTS = (".parquet", ".csv", ".json")


@dataclass(frozen=True)
class Forecast:
    """One symbol's forecast of one step ahead (``step`` 1 .. horizon).

    ``source`` says which config was used: ``best`` (best/'s choice), ``stored`` (the model's stored
    config, ``--model``) or ``defaults`` (nothing stored: the model's own configuration). ``quantiles``
    are of the price, keyed by level (``"0.1"``).
    """

    symbol: str
    model: str
    source: str
    status: str
    step: int
    last_time: str
    target_time: str
    last_close: float
    forecast: float
    predicted_return: float
    mc_se: float
    quantiles: dict[str, float]
    config: dict[str, Any]
    run_id: str | None
    generation: int | None


def _choose(
    models: dict[str, ModelSpec], store: ConfigStore, symbol: str, model: str | None
) -> tuple[str, str, StoredRecord | None]:
    """The model, the source and the record a symbol's forecast uses."""
    if model is not None:
        record = store.load(model, symbol)
        return model, "stored" if models[model].params(record) else "defaults", record
    best = store.load(BEST, symbol)
    if best is not None and best.model in models and models[best.model].params(best) is not None:
        return best.model, "best", best
    return next(iter(models)), "defaults", None


def forecast(config: Config, model: str | None = None, plugins: Plugins | None = None) -> list[Forecast]:
    """Every configured symbol's next ``data.horizon`` steps; see the module docstring."""
    plugins = plugins or Plugins.load()
    if model is not None and model not in config.models:
        raise UsageError(f"unknown model {model!r}; {did_you_mean(model, config.models)}", "--model")
    series = load_symbols(config)
    models = {name: make_model_spec(mc, plugins, config) for name, mc in config.models.items()}
    store, horizon = ConfigStore(config.output.directory), config.data.horizon
    chosen = {s.symbol: _choose(models, store, s.symbol, model) for s in series}
    groups: dict[tuple[str, str], list[Series]] = defaultdict(list)
    for s in series:
        name, _, record = chosen[s.symbol]
        params = models[name].params(record) if record is not None else None
        groups[(name, params_key(params or models[name].defaults))].append(s)
    used = {name for name, _ in groups}
    worker = Worker(
        WorkerSetup({n: m for n, m in models.items() if n in used}, config.runtime, str(config.path), horizon), plugins
    )
    runs = config.forecast.runs or config.evaluation.eval_runs
    seeds = tuple(derive_seeds(config.evaluation.seed, "forecast", runs))
    out = []
    for (name, key), members in groups.items():
        params = json.loads(key)
        context = type(worker.backends[name]).context_length(params)
        nexts = [next_window(s, context, horizon) for s in members]
        prices, spread, levels = _predict(worker, name, params, nexts, seeds, config.forecast.quantiles)
        for i, (s, nxt) in enumerate(zip(members, nexts, strict=True)):
            _, source, record = chosen[s.symbol]
            last = float(nxt.last_close[0])
            for h in range(horizon):
                out.append(
                    Forecast(
                        symbol=s.symbol,
                        model=name,
                        source=source,
                        status=record.status.value if record is not None and source != "defaults" else "defaults",
                        step=h + 1,
                        last_time=_iso(s.time[-1]),
                        target_time=_iso(nxt.target_time[0, h]),
                        last_close=last,
                        forecast=float(prices[i, h]),
                        predicted_return=float(prices[i, h]) / last - 1,
                        mc_se=float(spread[i, h]),
                        quantiles={f"{q:g}": float(levels[q][i, h]) for q in levels},
                        config=models[name].stored(params),
                        run_id=record.metadata.run_id if record else None,
                        generation=record.metadata.generation if record else None,
                    )
                )
    order = {s.symbol: i for i, s in enumerate(series)}
    return sorted(out, key=lambda f: (order[f.symbol], f.step))


def _predict(
    worker: Worker,
    model: str,
    params: dict[str, Any],
    windows: Sequence[WindowBatch],
    seeds: tuple[int, ...],
    levels: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Point forecasts ``[W, H]``, their Monte Carlo standard errors and the quantiles, for ``windows``
    stacked on one batch axis."""
    backend, batch = worker.backends[model], WindowBatch.stack(windows)
    aggregator, horizon = worker.aggregators[params["aggregate"]], batch.horizon
    with torch.inference_mode():
        state = backend.encode(batch, params)
        exact = backend.exact(state, params, aggregator)
        if exact is not None:
            point, se = exact.to("cpu", torch.float64), torch.zeros(len(batch), horizon, dtype=torch.float64)
            quantiles = {q: backend.exact(state, params, quantile(q)).to("cpu", torch.float64) for q in levels}
            return point, se, quantiles
        samples = backend.sample(state, params, Draws(seeds, batch.window_ids, device=backend.runtime.device))
        samples = samples.to("cpu", torch.float64)  # [runs, windows, samples, horizon]
        per_run = aggregator(samples, dim=2)
        se = per_run.std(0, unbiased=True) / len(seeds) ** 0.5 if len(seeds) > 1 else torch.zeros_like(per_run[0])
        pooled = samples.transpose(0, 1).reshape(len(batch), -1, horizon)  # every run's samples of a window
        quantiles = {q: quantile(q)(pooled, dim=1) for q in levels}
        return per_run.mean(0), se, quantiles


def _iso(seconds: Any) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).isoformat()


def forecast_frame(
    config: str | Path, symbols: Sequence[str] | None = None, model: str | None = None, output: str | Path | None = None
) -> Any:
    """``compiled-opt forecast`` for a trading script: the forecasts of ``config`` (a TOML path) as a
    pandas DataFrame (``to_frame``); ``output`` as the command's ``--output DIR``."""
    from compiled_opt.core.config import Override, load_config, output_overrides

    overrides = output_overrides(output, "output") | (
        {"data.symbols": Override(list(symbols), "symbols")} if symbols else {}
    )
    return to_frame(forecast(load_config(Path(config), overrides), model))


def to_frame(rows: Sequence[Forecast]) -> Any:
    """The forecasts as a pandas DataFrame: one row per symbol and step, a ``q<level>`` column per quantile."""
    import pandas as pd

    records = []
    for r in rows:
        row = asdict(r)
        row.update({f"q{level}": value for level, value in row.pop("quantiles").items()})
        row["config"] = json.dumps(row["config"], sort_keys=True)
        records.append(row)
    return pd.DataFrame.from_records(records)


def write(rows: Sequence[Forecast], out: Path) -> Path:
    """``rows`` to ``out`` (``.parquet``, ``.csv`` or ``.json``), atomically."""
    from compiled_opt.store.stores import atomic_write

    out = Path(out)
    if out.suffix not in OUTPUTS:
        raise UsageError(f"the file's name must end in {', '.join(OUTPUTS)}, not {out.suffix or '(nothing)'}", "--out")
    frame = to_frame(rows)
    writers = {
        ".parquet": lambda tmp: frame.to_parquet(tmp, index=False),
        ".csv": lambda tmp: frame.to_csv(tmp, index=False),
        ".json": lambda tmp: tmp.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n"),
    }
    atomic_write(out, writers[out.suffix])
    return out


def print_forecasts(rows: Sequence[Forecast], as_json: bool = False) -> None:
    """The forecasts as a table (or JSON), and a line for every symbol that fell back to the defaults."""
    if as_json:
        print(json.dumps({"forecasts": [asdict(r) for r in rows]}))
        return
    from rich.table import Table

    from compiled_opt.run.console import Console

    levels = list(rows[0].quantiles) if rows else []
    table = Table(box=None, pad_edge=False)
    for name in (
        "Symbol",
        "Model",
        "Config",
        "Step",
        "Target",
        "Last close",
        "Forecast",
        "Return",
        "MC SE",
        *(f"q{q}" for q in levels),
    ):
        table.add_column(name, justify="left" if name in ("Symbol", "Model", "Config", "Target") else "right")
    for r in rows:
        table.add_row(
            r.symbol,
            r.model,
            r.status,
            str(r.step),
            r.target_time[:10],
            f"{r.last_close:.6g}",
            f"{r.forecast:.6g}",
            f"{100 * r.predicted_return:+.3f}%",
            f"{r.mc_se:.3g}",
            *(f"{r.quantiles[q]:.6g}" for q in levels),
        )
    console = Console()
    console.table(table)
    for r in rows:
        if r.source == "defaults" and r.step == 1:
            console.line(f"{r.symbol}: no stored config for model {r.model}: the model's defaults")
