"""``latency`` (for benchmarks and tests): a backend that is busy the way a GPU worker is, at almost no CPU.

``encode`` sleeps ``encode_ms`` and ``sample`` sleeps ``sample_ms`` (defaults: 20 and 3 ms, a Toto-base
encode and sampling call on an H100), then return valid tensors at no cost: every sample of a window is
its last close moved by ``level`` per mille, so the optimizer has a landscape. With ``0`` and ``0`` it is
the zero-cost backend: a run's time is the engine's own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from compiled_opt.api import Draws, ModelBackend, OptionError, Register, Runtime, WindowBatch, hookimpl


class LatencyBackend(ModelBackend):
    defaults = {"level": 0.0, "num_samples": 64, "aggregate": "mean"}
    default_space = {"level": {"float": [-1.0, 1.0]}, "aggregate": {"choice": ["mean", "median"]}}
    samples_param = "num_samples"
    for_benchmarks = True

    def __init__(self, runtime: Runtime, encode_ms: float = 20.0, sample_ms: float = 3.0):
        super().__init__(runtime)
        for key, value in (("encode_ms", encode_ms), ("sample_ms", sample_ms)):
            if not 0 <= value <= 60_000:
                raise OptionError(f"must be between 0 and 60000 ms, not {value}", key)
        self.encode_s, self.sample_s = encode_ms / 1000, sample_ms / 1000

    @classmethod
    def context_length(cls, params: Mapping[str, Any]) -> int:
        return 2

    def encode(self, batch: WindowBatch, params: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        _sleep(self.encode_s)
        return batch.last_close, batch.horizon

    def sample(self, state: tuple[torch.Tensor, int], params: Mapping[str, Any], draws: Draws) -> torch.Tensor:
        _sleep(self.sample_s)
        last, horizon = state
        point = last * (1 + 1e-3 * float(params["level"]))
        return point[None, :, None, None].expand(draws.runs, -1, int(params["num_samples"]), horizon)


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


@hookimpl
def compiled_opt_register_backends(register: Register) -> None:
    register("latency", LatencyBackend)
