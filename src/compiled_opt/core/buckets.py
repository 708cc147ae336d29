"""Static shapes for compiled backends: what varies is padded to a few buckets.

CUDA graphs (``torch.compile`` mode ``reduce-overhead``) replay one recorded graph per input shape,
and a new shape costs a recording (and, for the first few, a compile). Compiled backends therefore
pad the window axis to a multiple of ``WINDOW_BUCKET`` (the validation and the test windows share
few shapes) and per-window token counts to powers of two (``pad_to``). Windows and tokens never
interact, so padding changes no result.
"""

from __future__ import annotations

import torch

WINDOW_BUCKET = 32


def pad_to(n: int) -> int:
    """The bucket of a per-window count: the next power of two."""
    return 1 << max(n - 1, 0).bit_length()


def window_bucket(n: int) -> int:
    """The bucket of a window count: the next multiple of ``WINDOW_BUCKET``."""
    return -(-n // WINDOW_BUCKET) * WINDOW_BUCKET


def pad_rows(t: torch.Tensor, rows: int, dim: int = 0) -> torch.Tensor:
    """``t`` with ``rows`` entries along ``dim``, the last one repeated (real data: no NaN in padding)."""
    extra = rows - t.shape[dim]
    if extra <= 0:
        return t
    last = t.narrow(dim, t.shape[dim] - 1, 1)
    return torch.cat([t, last.expand(*(extra if d == dim else -1 for d in range(t.dim())))], dim=dim)
