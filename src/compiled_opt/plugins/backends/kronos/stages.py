"""The staged Kronos forward for a one-step forecast, built from the package's own modules.

Kronos draws the next token in two halves: s1 from the transformer's last logits, then s2 from
a dependency layer whose single query (the embedded s1) attends over the whole context; the
tokenizer decoder then turns the last ``max_context`` tokens back into prices. All attention is
causal, so everything except the sampled token is the same for every sample of a window:

- ``ContextEncoder`` runs once per window set: tokenizer encoder, transformer, the dependency
  layer's keys/values over the context, and the tokenizer decoder's keys/values over the
  prefix the new token joins;
- ``S2Logits`` and ``DecoderStep`` run only the sampled token's position against those caches.

Only the orchestration is written here: every projection, norm, head, embedding and rotation is
the package's module, called with the package's weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[B, T, d]`` -> ``[B, heads, T, d / heads]``, the package's attention layout."""
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)


def rotate(rotary: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``rotary``'s own rotation of ``x`` by the angles ``cos`` / ``sin``."""
    return x * cos + rotary._rotate_half(x) * sin


def attend_with_self(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor
) -> torch.Tensor:
    """Causal attention for Q new positions that each see the shared prefix and only themselves:
    ``q, k, v`` ``[W, h, Q, hd]``, ``past_k, past_v`` ``[W, h, P, hd]`` (no Q x Q scores)."""
    scale = q.shape[-1] ** -0.5
    scores = torch.cat([q @ past_k.transpose(-1, -2), (q * k).sum(dim=-1, keepdim=True)], dim=-1) * scale
    weights = torch.softmax(scores, dim=-1)
    return weights[..., :-1] @ past_v + weights[..., -1:] * v


class ContextEncoder(nn.Module):
    """Once per window set: everything about the contexts that the samples share.

    ``forward(x [W, L, 6], stamp [W, L, 5])`` returns the last s1 logits ``[W, V1]``, the last
    hidden state ``[W, d]``, the dependency layer's keys and values ``[W, h, L, hd]``, and per
    decoder layer the keys, values (positions ``0 .. L-2``: context tokens ``1 .. L-1``, the
    prefix of the package's final decode) and the rotation of position ``L - 1``.
    """

    def __init__(self, tokenizer: nn.Module, model: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model

    def forward(self, x: torch.Tensor, stamp: torch.Tensor):
        s1, s2 = self.tokenizer.encode(x, half=True)
        logits, hidden = self.model.decode_s1(s1, s2, stamp)
        cross = self.model.dep_layer.cross_attn
        keys = split_heads(cross.k_proj(hidden), cross.n_heads)
        values = split_heads(cross.v_proj(hidden), cross.n_heads)
        # The package rotates its one query and all keys by position 0 (q has length 1).
        _, keys = cross.rotary(keys[..., :1, :], keys)
        return logits[:, -1], hidden[:, -1], keys, values, self._decoder_prefix(s1[:, 1:], s2[:, 1:])

    def _decoder_prefix(self, s1: torch.Tensor, s2: torch.Tensor):
        tok = self.tokenizer
        z = tok.post_quant_embed(tok.indices_to_bits((s1, s2), half=True))
        prefix = z.shape[1]
        cache = []
        for layer in tok.decoder:
            attn = layer.self_attn
            h = layer.norm1(z)
            keys = split_heads(attn.k_proj(h), attn.n_heads)
            values = split_heads(attn.v_proj(h), attn.n_heads)
            _, keys = attn.rotary(keys, keys)
            cos, sin = attn.rotary._update_cos_sin_cache(keys, prefix + 1)
            cache.append((keys, values, cos[..., prefix:, :], sin[..., prefix:, :]))
            z = layer(z)
        return tuple(cache)


class S2Logits(nn.Module):
    """s2 logits for candidate s1 tokens, one query each over the cached context keys/values.

    ``forward(s1 [W, Q], keys, values, last [W, d])`` -> ``[W, Q, V2]``: what
    ``Kronos.decode_s2`` gives at the last position for each s1 (the package broadcasts its
    query's output over all positions and reads the last).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, s1: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, last: torch.Tensor):
        m = self.model
        cross = m.dep_layer.cross_attn
        q = split_heads(cross.q_proj(m.embedding.emb_s1(s1)), cross.n_heads).unsqueeze(-2)
        q = cross.rotary(q, q)[0].squeeze(-2)  # each query alone, at position 0
        out = F.scaled_dot_product_attention(q, keys, values)
        attended = cross.resid_dropout(cross.out_proj(merge_heads(out)))
        return m.head.cond_forward(m.dep_layer.norm(last[:, None, :] + attended))


class DecoderStep(nn.Module):
    """The tokenizer decoder's output at the new token's position, from the cached prefix.

    ``forward(s1 [W, Q], s2 [W, Q], prefix)`` -> ``[W, Q, d_in]`` (normalised OHLCVA): each of the
    Q candidate tokens of a window attends to the window's prefix and to itself, as the package's
    causal decode of the last ``max_context`` tokens does for the one new token.
    """

    def __init__(self, tokenizer: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, s1: torch.Tensor, s2: torch.Tensor, prefix):
        tok = self.tokenizer
        z = tok.post_quant_embed(tok.indices_to_bits((s1, s2), half=True))
        for layer, (past_k, past_v, cos, sin) in zip(tok.decoder, prefix, strict=True):
            attn = layer.self_attn
            h = layer.norm1(z)
            q, k, v = (split_heads(proj(h), attn.n_heads) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
            q, k = rotate(attn.rotary, q, cos, sin), rotate(attn.rotary, k, cos, sin)
            out = attend_with_self(q, k, v, past_k, past_v)
            z = z + attn.resid_dropout(attn.out_proj(merge_heads(out)))
            z = z + layer.ffn(layer.norm2(z))
        return tok.head(z)
