"""Keyed random numbers: every draw is a pure function of (seed, stream, window, sample, index).

A counter-based generator (the splitmix64 finaliser applied to the key) makes the draws
common random numbers: two configs evaluated with the same seeds see the same numbers for the
same window and sample index, whatever else they draw, while runs with different seeds are
independent. Everything is vectorised tensor arithmetic, so all runs come out of one call.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B97F4A7C15


def _to_signed(x: int) -> int:
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser, in place on a fresh int64 tensor (wrapping arithmetic, logical shifts)."""
    x ^= (x >> 30) & ((1 << 34) - 1)
    x *= _to_signed(0xBF58476D1CE4E5B9)
    x ^= (x >> 27) & ((1 << 37) - 1)
    x *= _to_signed(0x94D049BB133111EB)
    x ^= (x >> 31) & ((1 << 33) - 1)
    return x


def _absorb(state: torch.Tensor, value: torch.Tensor | int) -> torch.Tensor:
    """Fold ``value`` into ``state``: mix(state + value + golden).

    Every key part goes through its own mix before the next is added, so (a, b) and
    (a + k, b - k) are different keys: no two keys alias short of a 64-bit hash collision.
    """
    return _mix(state + (value + _to_signed(_GOLDEN)))


def _root(seed: torch.Tensor | int) -> torch.Tensor:
    """The state of a key whose first part is ``seed``."""
    return _absorb(torch.as_tensor(seed, dtype=torch.int64).clone(), 0)


def stream_id(name: str) -> int:
    """A stable integer for a named stream of draws (e.g. ``"toto.component"``)."""
    return zlib.crc32(name.encode())


def derive_seeds(base_seed: int, purpose: str, count: int, *context: str | int) -> list[int]:
    """``count`` run seeds for one purpose (``"search"``, ``"confirm"``...) and optional ``context``
    (e.g. symbol, model, decision number): distinct keys give independent seeds."""
    state = _absorb(_root(base_seed), stream_id(purpose))
    for part in context:
        state = _absorb(state, stream_id(part) if isinstance(part, str) else int(part))
    seeds = _absorb(state, torch.arange(count, dtype=torch.int64))
    return [int(s) & 0x7FFFFFFF for s in seeds]


@dataclass(frozen=True)
class Draws:
    """The random numbers of one evaluation: one seed per run, one id per window.

    ``window_ids`` are absolute row numbers of the windows' targets, so a window keeps its
    numbers whichever other windows are evaluated with it.
    """

    seeds: tuple[int, ...]
    window_ids: torch.Tensor
    device: torch.device | str = "cpu"

    @property
    def runs(self) -> int:
        return len(self.seeds)

    def bits(self, stream: str, num_samples: int, *extra: int) -> torch.Tensor:
        """53 random bits per draw as int64, shape ``[runs, windows, num_samples, *extra]``.

        Draw (sample s, extra index j) is keyed by the counter ``s * 2**24 + j``: it does not depend
        on ``num_samples``, so a config with more samples sees the same first draws.
        """
        dev = torch.device(self.device)
        seeds = torch.tensor(self.seeds, dtype=torch.int64, device=dev)
        state = _absorb(_root(seeds), stream_id(stream)).view(-1, 1)
        state = _absorb(state, self.window_ids.to(dev, torch.int64).view(1, -1))
        n_extra = 1
        for e in extra:
            n_extra *= e
        counter = (torch.arange(num_samples, device=dev)[:, None] << 24) + torch.arange(n_extra, device=dev)
        state = _absorb(state[..., None, None], counter)
        state >>= 11
        state &= (1 << 53) - 1
        return state.view(len(self.seeds), -1, num_samples, *extra)

    def uniform(self, stream: str, num_samples: int, *extra: int) -> torch.Tensor:
        """Uniforms in (0, 1), shape ``[runs, windows, num_samples, *extra]``, float64."""
        return self.bits(stream, num_samples, *extra).to(torch.float64).add_(0.5).mul_(1.0 / (1 << 53))

    def integers(self, high: int, stream: str, num_samples: int, *extra: int) -> torch.Tensor:
        """Integers uniform on ``0 .. high - 1``, same shape as ``uniform``: the top 32 random bits
        scaled by ``high`` (multiply and shift, cheaper than a remainder; bias below ``high / 2**32``)."""
        if not 0 < high <= 1 << 21:
            raise ValueError(f"integers: high must be in 1 .. 2**21, not {high}")
        return self.bits(stream, num_samples, *extra).bitwise_right_shift_(21).mul_(high).bitwise_right_shift_(32)

    def normal(self, stream: str, num_samples: int, *extra: int) -> torch.Tensor:
        """Standard normals by inversion of ``uniform`` (monotone, so shared draws stay paired)."""
        return torch.special.ndtri(self.uniform(stream, num_samples, *extra))

    def gumbel(self, stream: str, num_samples: int, *extra: int) -> torch.Tensor:
        """Standard Gumbel draws, for sampling categories by ``argmax(logits + gumbel)``."""
        return -torch.log(-torch.log(self.uniform(stream, num_samples, *extra)))
