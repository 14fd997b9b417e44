"""VAE skip connections (pix2pix-turbo style) attached to a diffusers AutoencoderKL by hooks.

The encoder's down-block inputs are captured by forward pre-hooks; each goes through a
bias-free 1x1 conv and is added to the input of the matching decoder up block by another
forward pre-hook. For the SD VAE (blocks 128, 256, 512, 512) that is
128 @1, 128 @1/2, 256 @1/4, 512 @1/8 from the encoder into decoder up blocks taking
512 @1/8, 512 @1/4, 512 @1/2, 256 @1 (convs 512->512, 256->512, 128->512, 128->256).
The convs start at a tiny constant (1e-5) so training starts from the plain decoder.

Hooks instead of a copied Encoder/Decoder forward keep diffusers' own code in charge
(gradient checkpointing included: a re-run up block re-applies its hook to the same input).
Skips only act inside `capture()` / `inject()` blocks, so plain `vae.encode`/`vae.decode`
calls elsewhere are unaffected.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn


def skip_channels(block_out_channels: list[int] | tuple[int, ...]) -> list[tuple[int, int]]:
    """(in, out) channels of each skip conv, in decoder up-block order.

    Skip j feeds decoder up block j from encoder down block n-1-j (deepest first).
    """
    boc = list(block_out_channels)
    n = len(boc)
    enc_in = [boc[0]] + boc[:-1]  # input channels of encoder down block i
    rev = boc[::-1]
    dec_in = [rev[0]] + rev[:-1]  # input channels of decoder up block j
    return [(enc_in[n - 1 - j], dec_in[j]) for j in range(n)]


class VaeSkips(nn.Module):
    """The four (one per VAE block) 1x1 skip convs plus the hooks that apply them.

    Args:
        block_out_channels: the VAE's block_out_channels.
        init_value: constant initial weight of every skip conv.
    """

    def __init__(self, block_out_channels: list[int] | tuple[int, ...], init_value: float = 1e-5) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, kernel_size=1, bias=False) for cin, cout in skip_channels(block_out_channels)
        )
        for conv in self.convs:
            nn.init.constant_(conv.weight, init_value)
        self._captured: list[Tensor] | None = None
        self._inject: list[Tensor] | None = None
        self._handles: list[Any] = []

    def attach(self, vae: nn.Module) -> None:
        """Registers the capture/inject hooks on `vae.encoder.down_blocks` / `vae.decoder.up_blocks`."""
        down, up = vae.encoder.down_blocks, vae.decoder.up_blocks
        if len(down) != len(self.convs) or len(up) != len(self.convs):
            raise ValueError(f"VaeSkips: built for {len(self.convs)} blocks, VAE has {len(down)} down / {len(up)} up")
        self.detach()
        for block in down:
            self._handles.append(block.register_forward_pre_hook(self._capture_hook))
        for j, block in enumerate(up):
            self._handles.append(block.register_forward_pre_hook(self._make_inject_hook(j)))

    def detach(self) -> None:
        """Removes the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _capture_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._captured is not None:
            self._captured.append(args[0])

    def _make_inject_hook(self, j: int):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if self._inject is None:
                return None
            # Deepest encoder activation feeds the first up block.
            act = self._inject[len(self.convs) - 1 - j]
            conv = self.convs[j]
            skip = conv(act.to(conv.weight.dtype))
            return (args[0] + skip.to(args[0].dtype), *args[1:])

        return hook

    @contextmanager
    def capture(self) -> Iterator[list[Tensor]]:
        """Collects the encoder's down-block inputs while an encode runs in the block.

        Yields:
            the list that fills with one (N, C_i, H_i, W_i) tensor per down block.
        """
        self._captured = []
        try:
            yield self._captured
        finally:
            self._captured = None

    @contextmanager
    def inject(self, acts: list[Tensor]) -> Iterator[None]:
        """Adds the skip convs of `acts` (from `capture`) to the decoder while a decode runs.

        Args:
            acts: encoder activations, one per down block, batch matching the decoded latents.
        """
        if len(acts) != len(self.convs):
            raise ValueError(f"VaeSkips.inject: expected {len(self.convs)} activations, got {len(acts)}")
        self._inject = acts
        try:
            yield
        finally:
            self._inject = None
