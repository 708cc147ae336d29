"""``kronos``: the Kronos financial foundation model (``pip install 'compiled-opt[kronos]'``).

Built on the modules and weights of ``kronos-finance`` (import ``kronos_finance._vendor.kronos_model``).
Inputs are prepared as ``KronosPredictor`` prepares them; the forward is split into a cached
``encode`` (one pass over all windows) and a ``sample`` that draws every run's samples for the
new token only (``stages``). Horizon 1 only.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from compiled_opt.api import (
    FEATURES,
    Draws,
    ModelBackend,
    Register,
    Runtime,
    UsageError,
    WindowBatch,
    builtin_aggregators,
    hookimpl,
    pad_rows,
    pad_to,
    window_bucket,
)
from compiled_opt.plugins.backends.kronos import stages
from compiled_opt.plugins.backends.kronos.checkpoint import write_random
from compiled_opt.plugins.backends.weights import Weights, loading, locate

INSTALL_HINT = "pip install 'compiled-opt[kronos]'"
DEFAULT_MODEL = "NeoQuasar/Kronos-small"
DEFAULT_TOKENIZER = "NeoQuasar/Kronos-Tokenizer-base"
CLOSE = FEATURES.index("close")


def import_kronos() -> Any:
    """The package's ``kronos_model`` module, or a one-line ``UsageError`` saying how to install it."""
    try:
        from kronos_finance._vendor import kronos_model
    except ImportError as exc:
        raise UsageError(f"the kronos backend needs the kronos-finance package: {INSTALL_HINT}") from exc
    return kronos_model


def load_modules(package: Any, model: str, tokenizer: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The tokenizer and the model through the package's own ``from_pretrained``, each from a directory
    or, offline, the Hugging Face cache; whatever is missing of either is reported at once."""
    tokenizer_dir, model_dir = locate(
        [
            Weights("kronos tokenizer", tokenizer, DEFAULT_TOKENIZER, "tokenizer"),
            Weights("kronos model", model, DEFAULT_MODEL, "model"),
        ]
    )
    loaded = []
    for cls, directory, what in (
        (package.KronosTokenizer, tokenizer_dir, "kronos tokenizer"),
        (package.Kronos, model_dir, "kronos model"),
    ):
        # from_pretrained prints "Loading weights from local directory"
        with loading(what, directory), contextlib.redirect_stdout(io.StringIO()):
            loaded.append(cls.from_pretrained(str(directory)))
    return loaded[0], loaded[1]


def time_features(seconds: torch.Tensor) -> torch.Tensor:
    """``[..., 5]`` float32 minute, hour, weekday (Monday 0), day, month of epoch seconds (UTC),
    the columns ``KronosPredictor`` derives from its timestamps."""
    secs = seconds.cpu().numpy()
    day = secs.astype("datetime64[s]").astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    columns = (
        (secs // 60) % 60,
        (secs // 3600) % 24,
        (day.astype(np.int64) + 3) % 7,  # 1970-01-01 was a Thursday
        (day - month).astype(np.int64) + 1,
        month.astype(np.int64) % 12 + 1,
    )
    return torch.from_numpy(np.stack(columns, axis=-1).astype(np.float32))


def predictor_columns(context: torch.Tensor) -> torch.Tensor:
    """The six columns as the predictor sees them: where the data had no amount (the engine then
    stores close * volume), the predictor's own fill-in, volume * mean(open, high, low, close)."""
    volume = context[..., FEATURES.index("volume")]
    derived = (context[..., FEATURES.index("amount")] == context[..., CLOSE] * volume).all(dim=-1)
    filled = volume * context[..., :4].mean(dim=-1)
    amount = torch.where(derived[:, None], filled, context[..., FEATURES.index("amount")])
    return torch.cat([context[..., :5], amount[..., None]], dim=-1)


def normalise(context: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-window, per-column ``(x - mean) / (std + 1e-5)`` clipped to ``±clip``, from float32 inputs
    as the predictor casts them; returns the model input and the float64 ``mean`` and ``scale``."""
    x = predictor_columns(context).float().double()
    mean = x.mean(dim=1, keepdim=True)
    scale = x.std(dim=1, unbiased=False, keepdim=True) + 1e-5
    return ((x - mean) / scale).clamp(-clip, clip).float(), mean[:, 0], scale[:, 0]


def gumbel_pick(probs: torch.Tensor, rows: torch.Tensor, draws: Draws, stream: str) -> torch.Tensor:
    """One category per draw from row ``rows`` of ``probs`` ``[N, V]``: Gumbel-max over the
    categories ranked by probability, noise keyed by (run, window, sample, rank).

    Exactly the categorical distribution (as the package's ``multinomial``); noise is drawn only
    for the ranks some row keeps after filtering. A window's ranking is the same for every
    temperature, top-k and top-p, so configs differing in those share each rank's noise: their
    samples differ only where the change of probabilities requires (common random numbers).
    """
    ranked, order = probs.sort(dim=-1, descending=True, stable=True)
    width = int((ranked > 0).sum(dim=-1).max())
    noise = draws.gumbel(stream, rows.shape[-1], width)
    choice = (ranked[:, :width].log()[rows] + noise).argmax(dim=-1)
    return order[rows, choice]


def per_window(ids: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct ids of each window, padded: ``ids`` ``[R, W, S]`` in ``[0, size)`` ->
    ``table`` ``[W, Q]`` and, per draw, its flat index into ``table`` (``w * Q + position``)."""
    windows = ids.shape[1]
    window = torch.arange(windows, device=ids.device)[None, :, None]
    unique, inverse = torch.unique(window * size + ids, return_inverse=True)
    owner = unique // size
    counts = torch.bincount(owner, minlength=windows)
    rank = torch.arange(unique.numel(), device=ids.device) - (counts.cumsum(0) - counts)[owner]
    width = int(counts.max())
    table = torch.zeros(windows, width, dtype=torch.long, device=ids.device)
    table[owner, rank] = unique % size
    return table, (owner * width + rank)[inverse]


def owned(tree: Any) -> Any:
    """Copies of a nested tuple of tensors: under CUDA graphs (compile mode reduce-overhead) a
    compiled module's outputs live in memory that its next call overwrites, and states are cached."""
    return tuple(owned(t) for t in tree) if isinstance(tree, tuple) else tree.clone()


@dataclass(frozen=True)
class Encoded:
    """What ``encode`` keeps: the stages' caches and each window's close normalisation."""

    s1_logits: torch.Tensor
    last_hidden: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    prefix: tuple
    close_mean: torch.Tensor
    close_scale: torch.Tensor


class KronosBackend(ModelBackend):
    """Kronos with per-symbol temperature, top_p, top_k, sample_count, max_context and clip.

    Options: ``model`` and ``tokenizer``, each a Hugging Face id (read offline from the cache)
    or a directory written by ``save_pretrained`` (``plugins.weights``).
    """

    defaults = {
        "temperature": 1.0,
        "top_p": 0.9,
        "top_k": 0,
        "sample_count": 160,
        "max_context": 256,
        "clip": 5.0,
        "aggregate": "mean",
    }
    default_space = {
        "temperature": {"float": [0.05, 0.40], "log": True},
        "top_p": {"float": [0.65, 0.95]},
        "top_k": {"choice": [0, 12, 16, 20, 24, 28, 32, 40, 48]},
        "sample_count": {"ordered": [96, 128, 160, 192, 224, 256, 320]},
        "max_context": {"ordered": [128, 192, 224, 256, 320]},
        "clip": {"ordered": [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0]},  # a grid: encodes repeat
        "aggregate": {"choice": [a.name for a in builtin_aggregators()]},
    }
    encode_keys = ("max_context", "clip")
    context_param = "max_context"
    samples_param = "sample_count"
    max_horizon = 1
    random_checkpoint = staticmethod(write_random)  # `compiled-opt checkpoint random kronos`
    # fast mode keeps float32: bfloat16 moved pct_return_mae by up to 0.94%, far beyond the runs'
    # Monte Carlo error and engine.fast.DTYPE_TOLERANCE (docs/kronos.md)
    fast_dtype = "float32"

    def __init__(self, runtime: Runtime, model: str = DEFAULT_MODEL, tokenizer: str = DEFAULT_TOKENIZER):
        super().__init__(runtime)
        package = import_kronos()
        self.filter_logits = package.kronos.top_k_top_p_filtering
        self.tokenizer, self.model = load_modules(package, model, tokenizer)
        for module in (self.tokenizer, self.model):
            module.to(runtime.device).eval().requires_grad_(False)  # the package's predictor never calls eval()
        self.encoder = runtime.maybe_compile(stages.ContextEncoder(self.tokenizer, self.model))
        self.s2_logits = runtime.maybe_compile(stages.S2Logits(self.model))
        self.decoder_step = runtime.maybe_compile(stages.DecoderStep(self.tokenizer))

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        if not float(params["temperature"]) > 0:
            raise ValueError("temperature: must be > 0")
        if not 0 < float(params["top_p"]) <= 1:
            raise ValueError("top_p: must be in (0, 1]")
        if int(params["top_k"]) < 0:
            raise ValueError("top_k: must be >= 0 (0 = off)")
        if int(params["sample_count"]) < 1:
            raise ValueError("sample_count: must be at least 1")
        if int(params["max_context"]) < 2:
            raise ValueError("max_context: must be at least 2")
        if not float(params["clip"]) > 0:
            raise ValueError("clip: must be > 0")

    @classmethod
    def context_length(cls, params: Mapping[str, Any]) -> int:
        return int(params["max_context"])

    @property
    def compiled(self) -> bool:
        return self.runtime.compile != "none"

    def _static(self, table: torch.Tensor, state: Encoded) -> torch.Tensor:
        """Compiled: ``table`` ``[W, Q]`` padded to the encoded windows and a power-of-two Q, so the
        stages see few shapes (each query is independent: padding changes no result)."""
        if not self.compiled:
            return table
        return pad_rows(pad_rows(table, pad_to(table.shape[1]), dim=1), state.keys.shape[0])

    def _precision(self) -> Any:
        device = torch.device(self.runtime.device).type
        return torch.autocast(device, dtype=self.runtime.dtype, enabled=self.runtime.dtype != torch.float32)

    def prepare(self, batch: WindowBatch, params: Mapping[str, Any]):
        """The model's inputs for ``batch``: normalised ``x`` ``[W, L, 6]``, ``stamp`` ``[W, L, 5]``,
        and each window's float64 column ``mean`` and ``scale`` ``[W, 6]``."""
        x, mean, scale = normalise(batch.context, float(params["clip"]))
        return x, time_features(batch.context_time), mean, scale

    @torch.inference_mode()
    def encode(self, batch: WindowBatch, params: Mapping[str, Any]) -> Encoded:
        if batch.horizon != 1:
            raise UsageError(f"the kronos backend forecasts one step ahead; set data.horizon = 1 (not {batch.horizon})")
        x, stamp, mean, scale = self.prepare(batch, params)
        device = self.runtime.device
        if self.compiled:  # one compiled shape for every window count of a bucket; the state keeps the padding
            x, stamp = (pad_rows(t, window_bucket(len(batch))) for t in (x, stamp))
        with self._precision():
            outputs = self.encoder(x.to(device), stamp.to(device))
        s1_logits, last, keys, values, prefix = owned(outputs)
        return Encoded(
            s1_logits.float(), last, keys, values, prefix, mean[:, CLOSE].to(device), scale[:, CLOSE].to(device)
        )

    def probabilities(self, logits: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
        """Softmax of ``logits / temperature`` after the package's top-k (else top-p) filter."""
        logits = logits.float() / float(params["temperature"])
        top_k, top_p = int(params["top_k"]), float(params["top_p"])
        if top_k > 0 or top_p < 1.0:  # the filter returns nothing otherwise
            logits = self.filter_logits(logits, top_k=top_k, top_p=top_p)
        return torch.softmax(logits, dim=-1)

    @torch.inference_mode()
    def sample(self, state: Encoded, params: Mapping[str, Any], draws: Draws) -> torch.Tensor:
        count = int(params["sample_count"])
        windows, vocab1 = len(state.close_mean), state.s1_logits.shape[-1]
        rows = torch.arange(windows, device=state.s1_logits.device)[None, :, None].expand(draws.runs, -1, count)
        s1 = gumbel_pick(self.probabilities(state.s1_logits, params), rows, draws, "kronos.s1")
        table, slot = per_window(s1, vocab1)
        with self._precision():
            logits2 = self.s2_logits(self._static(table, state), state.keys, state.values, state.last_hidden)
        logits2 = logits2[:windows, : table.shape[1]]
        vocab2 = logits2.shape[-1]
        s2 = gumbel_pick(self.probabilities(logits2.flatten(0, 1), params), slot, draws, "kronos.s2")
        table, slot = per_window(s1 * vocab2 + s2, vocab1 * vocab2)
        with self._precision():
            out = self.decoder_step(*(self._static(t, state) for t in (table // vocab2, table % vocab2)), state.prefix)
        close = out[:windows, : table.shape[1], CLOSE].flatten().double()[slot]
        return (close * state.close_scale[:, None] + state.close_mean[:, None]).unsqueeze(-1)


@hookimpl
def compiled_opt_register_backends(register: Register) -> None:
    register("kronos", KronosBackend)
