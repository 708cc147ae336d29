"""``toto``: Datadog's Toto 1.0 (the ``toto-ts`` package), one forward per window set.

``encode`` runs the model once over all windows of a symbol, stacked on the batch axis (one
variate each: the close), and keeps the predictive distribution of the next patch: Toto's last
output patch holds a Student-T mixture for each of the next ``patch_size`` (64) steps. ``sample``
draws from those marginals with keyed random numbers; ``exact`` (``sampling = "exact"``) computes
the aggregate from the mixture itself. ``TotoForecaster`` also samples the steps of one patch
independently from these marginals, so for horizons up to one patch the two agree in distribution;
longer horizons would need autoregressive decoding and are refused.

Options: ``checkpoint``, a Hugging Face model id looked up in the local cache only (never
downloaded) or a directory holding ``model.safetensors`` and ``config.json`` (``plugins.weights``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from numbers import Real
from typing import Any

import torch

from compiled_opt.api import (
    FEATURES,
    Aggregator,
    Draws,
    ModelBackend,
    Register,
    Runtime,
    UsageError,
    WindowBatch,
    builtin_aggregators,
    hookimpl,
    pad_rows,
    window_bucket,
)
from compiled_opt.plugins.backends.toto.checkpoint import write_random
from compiled_opt.plugins.backends.toto.distribution import StudentTMixture
from compiled_opt.plugins.backends.weights import Weights, loading, locate

DEFAULT_CHECKPOINT = "Datadog/Toto-Open-Base-1.0"
INSTALL = "pip install --no-deps toto-ts==0.2.0 && pip install 'compiled-opt[toto]'"
SAMPLING = ("monte_carlo", "exact")


def toto_class() -> Any:
    """toto-ts's ``Toto`` class, or a one-line ``UsageError`` saying how to install it."""
    try:
        with warnings.catch_warnings():
            # gluonts, which toto imports, advises installing orjson or ujson to speed up its JSON
            # serialisation, which this backend never uses; that advice would end every run's output
            warnings.filterwarnings("ignore", message="Using `json`-module", category=UserWarning, module="gluonts")
            from toto.model.toto import Toto
    except ImportError as exc:
        raise UsageError(
            f"the toto backend needs toto-ts and its dependencies ({exc.name} is not installed): `{INSTALL}`"
        ) from exc
    return Toto


def load_model(checkpoint: str, device: str = "cpu") -> torch.nn.Module:
    """Toto's backbone in eval mode, through the package's own ``Toto.load_from_checkpoint``.

    Without xformers, with the same non-strict key matching as ``Toto.from_pretrained``, which
    fails with recent huggingface_hub releases (2.4 here): its ``_from_pretrained`` requires
    ``proxies`` and ``resume_download`` arguments they no longer pass.
    """
    cls = toto_class()
    (directory,) = locate([Weights("toto checkpoint", checkpoint, DEFAULT_CHECKPOINT, "checkpoint")])
    with loading("Toto checkpoint", directory):
        model = cls.load_from_checkpoint(
            str(directory), map_location=device, strict=False, use_memory_efficient_attention=False
        )
    return model.model.eval()


def _components(distribution: torch.distributions.Distribution) -> tuple[torch.Tensor, ...]:
    """(weights, df, loc, scale) ``[..., K]`` of Toto's output head (a single Student-T is K = 1)."""
    if isinstance(distribution, torch.distributions.MixtureSameFamily):
        parts = distribution.component_distribution
        return distribution.mixture_distribution.probs, parts.df, parts.loc, parts.scale
    single = (torch.ones_like(distribution.df), distribution.df, distribution.loc, distribution.scale)
    return tuple(t[..., None] for t in single)


class NextPatch(torch.nn.Module):
    """The backbone's forward reduced to tensors for the next patch, so it compiles:
    (weights, df, loc, scale) ``[B, V, patch, K]`` and the scaler's (shift, spread) ``[B, V, patch]``.

    The output head (position-wise) runs on the last patch only, in float32 even under autocast:
    its mixture weights are a softmax that bfloat16 rounds off the simplex."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, series: torch.Tensor, valid: torch.Tensor, id_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features, shift, spread = self.backbone.backbone(series, valid, id_mask, None, series.shape[-1])
        patch = self.backbone.patch_embed.stride
        with torch.autocast(series.device.type, enabled=False):
            distribution = self.backbone.output_distribution(features[:, :, -patch:].float())
        return *_components(distribution), shift[:, :, -patch:].float(), spread[:, :, -patch:].float()


class TotoBackend(ModelBackend):
    defaults = {"num_samples": 256, "aggregate": "median", "context_length": 512, "sampling": "monte_carlo"}
    default_space = {
        "num_samples": {"ordered": [64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096]},
        "aggregate": {"choice": [a.name for a in builtin_aggregators()]},
        "context_length": {"ordered": [128, 256, 384, 512]},
    }
    encode_keys = ("context_length",)
    context_param = "context_length"
    samples_param = "num_samples"
    max_horizon = 64  # one patch of Toto 1.0: longer horizons need autoregressive decoding
    random_checkpoint = staticmethod(write_random)  # `compiled-opt checkpoint random toto`
    # fast mode: bfloat16 moved pct_return_mae by at most 0.26% from float32 (docs/toto.md)
    fast_dtype = "bfloat16"

    def __init__(self, runtime: Runtime, checkpoint: str = DEFAULT_CHECKPOINT):
        super().__init__(runtime)
        self.model = load_model(checkpoint, runtime.device)
        self.patch_size = int(self.model.patch_embed.stride)
        self.max_horizon = self.patch_size
        self._forward = runtime.maybe_compile(NextPatch(self.model).eval())

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        for key in ("num_samples", "context_length"):
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, Real) or int(value) != value or value < 1:
                raise ValueError(f"{key}: must be a positive integer, not {value!r}")
        if params["sampling"] not in SAMPLING:
            raise ValueError(f"sampling: must be one of {', '.join(SAMPLING)}, not {params['sampling']!r}")

    @classmethod
    def unused(cls, params: Mapping[str, Any]) -> frozenset[str]:
        return frozenset({"num_samples"}) if params["sampling"] == "exact" else frozenset()

    @classmethod
    def context_length(cls, params: Mapping[str, Any]) -> int:
        return int(params["context_length"])

    def encode(self, batch: WindowBatch, params: Mapping[str, Any]) -> StudentTMixture:
        """One forward over all windows: the next-step mixtures ``[windows, horizon, K]``."""
        if batch.horizon > self.patch_size:
            raise UsageError(
                f"horizon {batch.horizon}: the toto backend forecasts at most one patch ({self.patch_size} steps)"
                " from one forward; longer horizons need autoregressive decoding, which it does not do"
            )
        close = batch.context[:, None, :, FEATURES.index("close")].to(self.runtime.device, torch.float32)
        if self.runtime.compile != "none":  # one compiled shape for every window count of a bucket
            close = pad_rows(close, window_bucket(len(batch)))
        pad = -close.shape[-1] % self.patch_size
        series = torch.nn.functional.pad(close, (pad, 0))
        valid = torch.nn.functional.pad(torch.ones_like(close, dtype=torch.bool), (pad, 0))
        id_mask = torch.zeros_like(series, dtype=torch.int)
        device = torch.device(self.runtime.device).type
        low_precision = self.runtime.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(device, dtype=self.runtime.dtype, enabled=low_precision):
            weights, df, loc, scale, shift, spread = self._forward(series, valid, id_mask)

        def steps(t: torch.Tensor) -> torch.Tensor:
            return t[: len(batch), 0, : batch.horizon].to(torch.float64)

        shift, spread, weights = steps(shift)[..., None], steps(spread)[..., None], steps(weights)
        weights = weights / weights.sum(-1, keepdim=True)  # exactly 1 in float64, whatever the forward's dtype
        return StudentTMixture(weights, steps(df), shift + spread * steps(loc), spread * steps(scale))

    def sample(self, state: StudentTMixture, params: Mapping[str, Any], draws: Draws) -> torch.Tensor:
        return state.sample(draws, int(params["num_samples"]))

    def exact(self, state: StudentTMixture, params: Mapping[str, Any], aggregator: Aggregator) -> torch.Tensor | None:
        return state.aggregate(aggregator) if params["sampling"] == "exact" else None


@hookimpl
def compiled_opt_register_backends(register: Register) -> None:
    register("toto", TotoBackend)
