"""Random-initialised Kronos checkpoints, written with the package's own ``save_pretrained``.

A checkpoint is a directory with ``tokenizer/`` and ``model/``, as ``KronosBackend`` loads them.
``tiny`` (width 32, 2 layers, 6-bit tokens: seconds on a CPU, for tests and trying pipelines);
``small`` is Kronos-small (d 512, 8 layers, 8 heads, ff 1024) and ``base`` Kronos-base (d 832,
12 layers, 16 heads, ff 2048), both with Kronos-Tokenizer-base (d 256, 4 + 4 layers, 10-bit tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

DROPOUT = {"ffn_dropout_p": 0.1, "attn_dropout_p": 0.1, "resid_dropout_p": 0.1}  # off in eval mode
TOKENIZER_BASE = dict(
    d_in=6,
    d_model=256,
    n_heads=4,
    ff_dim=512,
    n_enc_layers=4,
    n_dec_layers=4,
    s1_bits=10,
    s2_bits=10,
    beta=0.05,
    gamma0=1.0,
    gamma=1.1,
    zeta=0.05,
    group_size=4,
    **DROPOUT,
)
TOKENIZERS = {
    "tiny": {
        **TOKENIZER_BASE,
        "d_model": 32,
        "ff_dim": 64,
        "n_enc_layers": 3,
        "n_dec_layers": 3,
        "s1_bits": 6,
        "s2_bits": 6,
    },
    "small": TOKENIZER_BASE,
    "base": TOKENIZER_BASE,
}
MODELS = {
    "tiny": dict(d_model=32, n_heads=4, ff_dim=64, n_layers=2, s1_bits=6, s2_bits=6),
    "small": dict(d_model=512, n_heads=8, ff_dim=1024, n_layers=8, s1_bits=10, s2_bits=10),
    "base": dict(d_model=832, n_heads=16, ff_dim=2048, n_layers=12, s1_bits=10, s2_bits=10),
}
SIZES = tuple(MODELS)


def random_modules(size: str = "tiny", seed: int = 0, layers: int | None = None) -> tuple[Any, Any]:
    """A random-initialised ``(KronosTokenizer, Kronos)`` of ``size`` (``layers``: transformer depth)."""
    from compiled_opt.plugins.backends.kronos import import_kronos

    package = import_kronos()
    torch.manual_seed(seed)
    model = {**MODELS[size], **({"n_layers": layers} if layers else {})}
    return (
        package.KronosTokenizer(**TOKENIZERS[size]),
        package.Kronos(**model, **DROPOUT, token_dropout_p=0.1, learn_te=True),
    )


def write_random(directory: Path, size: str = "tiny", seed: int = 0, layers: int | None = None) -> dict[str, str]:
    """A random-initialised checkpoint of ``size`` in ``directory``; returns the backend's options for it."""
    directory = Path(directory)
    options = {"model": str(directory / "model"), "tokenizer": str(directory / "tokenizer")}
    tokenizer, model = random_modules(size, seed, layers)
    tokenizer.save_pretrained(options["tokenizer"])
    model.save_pretrained(options["model"])
    return options
