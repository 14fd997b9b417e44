"""FixerNet: NVIDIA's current Fixer (nv-tlabs/Fixer, Cosmos-Predict2 0.6B) as one plain nn.Module.

The forward is Fixer's `Pix2Pix_Turbo.forward` (`src/pix2pix_turbo_nocond_cosmos_base_faster_tokenizer.py`)
with cosmos-predict2's `Text2ImagePipeline.denoise`: the render (B, 3, H, W) in [-1, 1] gets a
frame axis, is encoded by the tokenizer and scaled by sigma_data, denoised once by the DiT at
timestep 250 under the empty text condition (`schedule.py`), divided by sigma_data, decoded,
and loses the frame axis. No noise, no reference view, no skip connections: Fixer's nine
`skip_conv_*` decoder convolutions are written for the Wan2.1 VAE but never created nor bound
in its code, and its README runs without `--vae_skip_connection`. In bfloat16 it runs under
CUDA autocast, as NVIDIA's inference script does.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from lightning_modules.difix.cosmos.config import FixerNetConfig
from lightning_modules.difix.cosmos.dit import build_dit, run_dit
from lightning_modules.difix.cosmos.schedule import denoise_once
from lightning_modules.difix.cosmos.tokenizer import ImageTokenizer, tiny_tokenizer
from lightning_modules.difix.net.sizing import SizePolicy, SizeSpec

LICENCE = "NVIDIA Open Model License (nvidia/Fixer weights); code Apache-2.0 (nv-tlabs/Fixer)"
# Fixer's set_train: the whole pipeline trains except tokenizer parameters whose name has this.
FROZEN_TOKENIZER_PART = "time_conv"


class FixerNet(nn.Module):
    """Fixer: tokenizer -> one rectified-flow DiT step at timestep 250 -> tokenizer decoder.

    Args:
        config: the network's sizes and step (published 0.6B by default).
        tokenizer: the tokenizer (NVIDIA's TorchScript programs from `read_tokenizer_file`);
            None builds `config.tokenizer`'s tiny plain one.
        origin: what the weights are, for the load line.
        licence: the weights' licence, for the load line.

    Attributes:
        default_size: (height, width) it was trained at, (576, 1024).
        size_multiple: H and W must be multiples of this (tokenizer 8 x DiT patch 2 = 16).
        uses_references: False: Fixer takes no reference view; `refs` are ignored.
    """

    uses_references = False
    value_range = (0.0, 1.0)  # what forward takes and returns (the fixer contract)

    def __init__(self, config: FixerNetConfig | None = None, tokenizer: ImageTokenizer | None = None,
                 origin: str = "random weights", licence: str = LICENCE) -> None:
        super().__init__()
        config = config if config is not None else FixerNetConfig()
        config.check()
        if tokenizer is None and config.tokenizer is None:
            raise ValueError("FixerNet: no tokenizer given and config.tokenizer is None (NVIDIA's tokenizer comes "
                             "from base/tokenizer_fast.pth: load it with load_fixer_net)")
        self.config = config
        self.dit = build_dit(config.dit, seed=config.seed)
        self.tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer(config.tokenizer, seed=config.seed)
        self.default_size: tuple[int, int] = (int(config.default_size[0]), int(config.default_size[1]))
        self.size_multiple: int = self.tokenizer.compression * config.dit.patch
        self.max_side = self.size_multiple * config.dit.max_size[1] // config.dit.patch
        self.origin = origin
        self.licence = licence

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        """The DiT's weight dtype (the dtype it runs in)."""
        return next(self.dit.parameters()).dtype

    def to_dtype(self, dtype: torch.dtype | str) -> FixerNet:
        """Casts every weight and the latent statistics (bfloat16 on CUDA as NVIDIA runs it, float32 on the CPU)."""
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        return self.to(dtype=dtype)

    def describe(self) -> str:
        """One line: layout, step, size, dtype, references, licence."""
        params = sum(p.numel() for p in self.dit.parameters()) / 1e6
        d = self.config.dit
        return (f"Fixer (nv-tlabs/Fixer): {self.origin} | Cosmos-Predict2 DiT {params:.3g}M ({d.num_layers} blocks x "
                f"{d.width}) + tokenizer ({self.tokenizer.origin}) | one step at timestep {self.config.timestep}, "
                f"empty text | H, W multiples of {self.size_multiple}, trained at {self.default_size[0]}x"
                f"{self.default_size[1]} | dtype: {str(self.dtype).replace('torch.', '')} | reference view: none "
                f"(references are ignored) | licence: {self.licence}")

    def size_policy(self, size: SizeSpec = "auto") -> SizePolicy:
        """"auto": its training size (576 x 1024) with Pillow's BILINEAR there and back, as NVIDIA's
        inference script; [height, width] the same at that size (multiples of `size_multiple`);
        "reference" / "pad" / "resize" to multiples of `size_multiple` near the render's own size."""
        if size == "auto" or isinstance(size, (tuple, list)):
            fixed = self.default_size if size == "auto" else (int(size[0]), int(size[1]))
            self.check_size(*fixed)
            return SizePolicy("fixed", multiple=self.size_multiple, size=fixed, filter="bilinear")
        if size not in ("reference", "pad", "resize"):
            raise ValueError(f"FixerNet: size must be auto, reference, pad, resize or [height, width], got {size!r}")
        return SizePolicy(size, multiple=self.size_multiple)

    # ------------------------------------------------------------------ training
    def tokenizer_frozen(self, name: str) -> bool:
        """Whether a tokenizer parameter stays frozen in fine-tuning (Fixer's set_train)."""
        return FROZEN_TOKENIZER_PART in name

    def set_trainable(self) -> list[nn.Parameter]:
        """Fixer's `set_train`: DiT and tokenizer train, tokenizer `time_conv` weights frozen.

        Returns:
            The trainable parameters.
        """
        self.requires_grad_(True)
        for name, param in self.tokenizer.named_parameters():
            if self.tokenizer_frozen(name):
                param.requires_grad_(False)
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ forward
    def check_size(self, height: int, width: int) -> None:
        """Raises ValueError when (height, width) is no size this tokenizer + DiT take."""
        m = self.size_multiple
        if height % m or width % m or min(height, width) < m:
            raise ValueError(f"FixerNet: image size {height}x{width} must be multiples of {m} (tokenizer 8x, DiT "
                             f"patch {self.config.dit.patch}); resize to e.g. {self.default_size[0]}x"
                             f"{self.default_size[1]}")
        if max(height, width) > self.max_side:
            raise ValueError(f"FixerNet: image size {height}x{width} is over the DiT's RoPE table "
                             f"({self.max_side} pixels a side); resize it")

    def restore(self, x: Tensor) -> Tensor:
        """Fixer's forward on images in its own range.

        Args:
            x: (B, 3, H, W) in [-1, 1].

        Returns:
            (B, 3, H, W) the decoder's output, not clamped (Fixer's losses see this), float32.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FixerNet: expected images (B, 3, H, W), got {tuple(x.shape)}")
        self.check_size(int(x.shape[-2]), int(x.shape[-1]))
        dtype = self.dtype
        # NVIDIA runs bfloat16 under CUDA autocast (its inference script); float32 needs none.
        half = dtype in (torch.bfloat16, torch.float16) and x.device.type == "cuda"
        amp = torch.autocast("cuda", dtype=dtype) if half else nullcontext()
        cfg = self.config
        with amp:
            latent = self.tokenizer.encode(x.to(dtype)[:, :, None]) * cfg.sigma_data

            def velocity(z: Tensor, t: Tensor) -> Tensor:
                return run_dit(self.dit, z, t, cfg.text_tokens)

            x0 = denoise_once(velocity, latent, cfg.timestep, dtype)
            out = self.tokenizer.decode(x0 / cfg.sigma_data)[:, :, 0]
        return out.float()

    def forward(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """Fixes renders.

        Args:
            images: (B, 3, H, W) in [0, 1], H and W multiples of `size_multiple`.
            refs: ignored (Fixer takes no reference view).

        Returns:
            (B, 3, H, W) the decoder's output mapped to [0, 1], float32, not clamped: whoever runs
            the net checks the raw output before it clamps (`ReadyFixer`).
        """
        del refs
        return (self.restore(images.float() * 2 - 1) + 1) / 2
