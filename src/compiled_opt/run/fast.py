"""``runtime.mode = "fast"`` (``--fast``): the settings measured fastest on one GPU, and static shapes for them.

``fast_settings`` turns the runtime section into concrete settings: CUDA, ``torch.compile`` with CUDA
graphs (``reduce-overhead``) and, per backend, its ``fast_dtype``: the lowest precision whose
``pct_return_mae`` was measured to agree with float32 within ``DTYPE_TOLERANCE`` (``float32`` unless
the backend declares another). Without a CUDA device it falls back to the normal CPU settings and says
so in one line.

CUDA graphs replay one recorded graph per input shape: compiled backends pad what varies to the
buckets of ``core.buckets``. ``compiles()`` counts the graphs compiled so far.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from compiled_opt.core.backend import ModelBackend, Runtime
from compiled_opt.core.config import RuntimeConfig

FAST_COMPILE = "reduce-overhead"
# How far a backend's fast_dtype may move pct_return_mae from float32, relative: about one Monte Carlo
# standard error of 3 runs on 30 windows, so it cannot reorder configs more than sampling noise does.
DTYPE_TOLERANCE = 0.005


@dataclass(frozen=True)
class FastSettings:
    """The concrete runtime of a run: ``runtime`` for every worker, ``dtypes`` per model name, and a
    ``notice`` to print (empty when there is nothing to say)."""

    runtime: RuntimeConfig
    dtypes: dict[str, str]
    notice: str = ""

    def runtime_for(self, model: str, runtime: Runtime) -> Runtime:
        """``runtime`` (the worker's, resolved from ``self.runtime``) with ``model``'s dtype."""
        return dataclasses.replace(runtime, dtype=getattr(torch, self.dtypes.get(model, self.runtime.dtype)))


def fast_settings(
    cfg: RuntimeConfig, backends: Mapping[str, type[ModelBackend]], cuda: bool | None = None
) -> FastSettings:
    """What a run with runtime section ``cfg`` and models ``backends`` (model name -> backend class)
    runs with. ``cfg`` itself unless ``cfg.mode`` is ``"fast"``; ``cuda`` overrides detection (tests)."""
    if cfg.mode != "fast":
        return FastSettings(cfg, dict.fromkeys(backends, cfg.dtype))
    if not (torch.cuda.is_available() if cuda is None else cuda):
        normal = dataclasses.replace(cfg, mode="default", device="cpu", compile="none", dtype="float32")
        return FastSettings(
            normal,
            dict.fromkeys(backends, "float32"),
            "fast mode: no CUDA device here, running with the normal CPU settings (device cpu, float32, no compile)",
        )
    runtime = dataclasses.replace(cfg, device="cuda", compile=FAST_COMPILE, dtype="float32")
    dtypes = {name: cls.fast_dtype for name, cls in backends.items()}
    shown = ", ".join(f"{name} {dtype}" for name, dtype in dtypes.items())
    return FastSettings(runtime, dtypes, f"fast mode: cuda, torch.compile {FAST_COMPILE} (CUDA graphs), {shown}")


def compiles() -> int:
    """Graphs ``torch.compile`` has compiled in this process so far (TorchDynamo's own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
