"""Toto checkpoints: writing a model the way ``load_model`` reads it, and random-initialised ones.

``tiny`` (patch 16, width 32, 2 layers, 4 components: seconds on a CPU, for tests and trying
pipelines), ``small`` (width 256, 4 layers, 8.5M parameters: CPU benchmarks) and ``base``
(Toto-Open-Base-1.0's architecture, 151M parameters) share everything else with the released model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

ARCHITECTURE = {
    "patch_size": 64,
    "stride": 64,
    "dropout": 0.1,
    "spacewise_first": True,
    "scaler_cls": "<class 'model.scaler.CausalPatchStdMeanScaler'>",
    "output_distribution_classes": ["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
    "output_distribution_kwargs": {"k_components": 24},
    "use_memory_efficient_attention": False,
}
SIZES = {
    "tiny": {
        "patch_size": 16,
        "stride": 16,
        "embed_dim": 32,
        "num_layers": 2,
        "num_heads": 2,
        "mlp_hidden_dim": 64,
        "spacewise_every_n_layers": 2,
        "output_distribution_kwargs": {"k_components": 4},
    },
    "small": {"embed_dim": 256, "num_layers": 4, "num_heads": 4, "mlp_hidden_dim": 1024, "spacewise_every_n_layers": 4},
    "base": {
        "embed_dim": 768,
        "num_layers": 12,
        "num_heads": 12,
        "mlp_hidden_dim": 3072,
        "spacewise_every_n_layers": 12,
    },
}


def architecture(size: str) -> dict[str, Any]:
    """The constructor arguments of a ``Toto`` of ``size``."""
    return {**ARCHITECTURE, **SIZES[size]}


def random_model(size: str = "tiny", seed: int = 0, **changes: Any) -> torch.nn.Module:
    """A random-initialised ``Toto`` of ``size`` (constructor arguments ``changes`` replaced)."""
    from compiled_opt.plugins.backends.toto import toto_class

    torch.manual_seed(seed)
    return toto_class()(**{**architecture(size), **changes})


def save_checkpoint(model: torch.nn.Module, directory: Path) -> Path:
    """Write a ``Toto`` as ``load_model`` reads it: ``model.safetensors`` and ``config.json``.

    toto-ts 0.2.0's ``Toto.save_pretrained`` raises ``NotImplementedError`` (the class defines no
    ``_save_pretrained``); this writes the two files it would, the config being the constructor
    arguments that huggingface_hub's mixin recorded.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(model._hub_mixin_config, indent=2, sort_keys=True))
    return directory


def write_random(directory: Path, size: str = "tiny", seed: int = 0) -> dict[str, str]:
    """A random-initialised checkpoint of ``size`` in ``directory``; returns the backend's options for it."""
    return {"checkpoint": str(save_checkpoint(random_model(size, seed), directory))}
