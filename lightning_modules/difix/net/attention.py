"""Multi-view reference attention through diffusers' attention-processor API.

Difix mixes the reference views into the render only around self-attention: in every
transformer block, tokens are regrouped `(b v) n c -> b (v n) c` before attn1 so attention runs
jointly over all views, then regrouped back before cross-attention and the feed-forward. The
pretrained attention weights are reused unchanged.

The number of views travels as `cross_attention_kwargs={"num_views": V}` in the UNet call:
diffusers hands those kwargs to every attention processor (attn1 and attn2), so attn2 gets a
thin wrapper that accepts and ignores it. Processors are set on one UNet instance
(`install_multiview_attention`); nothing is patched globally.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class ViewAgnosticAttnProcessor:
    """Wraps a processor (attn2) so it accepts and ignores `num_views`.

    Args:
        inner: the processor doing the attention math (default `AttnProcessor2_0`).
    """

    def __init__(self, inner: Any | None = None) -> None:
        if inner is None:
            from diffusers.models.attention_processor import AttnProcessor2_0

            inner = AttnProcessor2_0()
        self.inner = inner

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        num_views: int = 1,
    ) -> Tensor:
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class MultiViewAttnProcessor(ViewAgnosticAttnProcessor):
    """Self-attention over the tokens of all views of one sample (attn1)."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        num_views: int = 1,
    ) -> Tensor:
        """Runs attn1 jointly over views.

        Args:
            attn: the diffusers Attention module.
            hidden_states: (B*V, N, C) tokens, views of one sample adjacent.
            encoder_hidden_states: must be None (self-attention).
            attention_mask: must be None when num_views > 1.
            temb: passed through.
            num_views: V.

        Returns:
            (B*V, N, C).
        """
        if num_views == 1:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if hidden_states.ndim != 3:
            raise ValueError(f"MultiViewAttnProcessor expects (B*V, N, C) tokens, got {tuple(hidden_states.shape)}")
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("MultiViewAttnProcessor is for self-attention without a mask (attn1)")
        bv, n, c = hidden_states.shape
        if bv % num_views:
            raise ValueError(f"MultiViewAttnProcessor: batch {bv} is not a multiple of num_views={num_views}")
        joint = hidden_states.reshape(bv // num_views, num_views * n, c)
        out = self.inner(attn, joint, None, None, temb)
        return out.reshape(bv, n, c)


def install_multiview_attention(unet: nn.Module) -> int:
    """Sets multi-view processors on one UNet: joint attention in every attn1, pass-through attn2.

    Each current processor becomes the inner processor of its wrapper, so a model already using
    another (e.g. memory-efficient) processor keeps it.

    Args:
        unet: a diffusers UNet2DConditionModel.

    Returns:
        number of attn1 processors replaced.
    """
    current = unet.attn_processors
    processors: dict[str, Any] = {}
    n_self = 0
    for name, proc in current.items():
        inner = getattr(proc, "inner", proc)  # idempotent: do not wrap a wrapper
        if name.endswith("attn1.processor"):
            processors[name] = MultiViewAttnProcessor(inner)
            n_self += 1
        else:
            processors[name] = ViewAgnosticAttnProcessor(inner)
    if n_self == 0:
        raise ValueError("install_multiview_attention: the UNet has no attn1 (self-attention) processors")
    # set_attn_processor empties the dict it is given; it is a fresh one built here.
    unet.set_attn_processor(processors)
    return n_self
