"""``bootstrap``: a weight-free stochastic backend that resamples recent log returns.

Each sample path draws, for every step, one of the window's last ``lookback`` one-step log
returns r, and moves the last close by ``mean + vol_scale * (r - mean)`` (``mean`` is the
lookback's average return). It serves the default run and the tests through the same two-stage
interface as the neural backends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from compiled_opt.api import FEATURES, Draws, ModelBackend, Register, WindowBatch, builtin_aggregators, hookimpl


class BootstrapBackend(ModelBackend):
    defaults = {"lookback": 60, "vol_scale": 1.0, "num_samples": 256, "aggregate": "median"}
    default_space = {
        "lookback": {"int": [10, 250], "log": True},
        "vol_scale": {"float": [0.25, 2.0], "log": True},
        "num_samples": {"ordered": [64, 128, 256, 512, 1024]},
        "aggregate": {"choice": [a.name for a in builtin_aggregators()]},
    }
    encode_keys = ("lookback",)
    context_param = "lookback"
    samples_param = "num_samples"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> None:
        if int(params["lookback"]) < 2:
            raise ValueError("lookback: must be at least 2")
        if float(params["vol_scale"]) <= 0:
            raise ValueError("vol_scale: must be positive")
        if int(params["num_samples"]) < 1:
            raise ValueError("num_samples: must be at least 1")

    @classmethod
    def context_length(cls, params: Mapping[str, Any]) -> int:
        return int(params["lookback"]) + 1

    def encode(self, batch: WindowBatch, params: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        close = batch.context[..., FEATURES.index("close")].to(self.runtime.device)
        returns = torch.log(close[:, 1:] / close[:, :-1])
        return {"returns": returns, "last": close[:, -1], "horizon": batch.horizon}

    def sample(self, state: dict[str, torch.Tensor], params: Mapping[str, Any], draws: Draws) -> torch.Tensor:
        returns = state["returns"]
        windows, lookback = returns.shape
        mean = returns.mean(dim=1, keepdim=True)
        steps = mean + float(params["vol_scale"]) * (returns - mean)  # [windows, lookback]: every possible step
        pick = draws.integers(lookback, "bootstrap.pick", int(params["num_samples"]), state["horizon"])
        pick += (torch.arange(windows, device=pick.device) * lookback)[None, :, None, None]  # rows of `steps`
        last = state["last"][None, :, None, None]
        if state["horizon"] == 1:  # one step: take the prices themselves
            return (state["last"][:, None] * torch.exp(steps)).take(pick)
        return last * torch.exp(steps.take(pick).cumsum(dim=-1))


@hookimpl
def compiled_opt_register_backends(register: Register) -> None:
    register("bootstrap", BootstrapBackend)
