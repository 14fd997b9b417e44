"""Typed configuration of NVIDIA's current Fixer network (nv-tlabs/Fixer on Cosmos-Predict2 0.6B).

Where each default comes from (read in nvidia-cosmos/cosmos-predict2 and nv-tlabs/Fixer):
- `DiTConfig`: the 0.6B text-to-image DiT of cosmos-predict2's
  `cosmos_predict2/configs/base/config_text2image.py` (`MiniTrainDIT` with model_channels 1280, 20 blocks, 20
  heads, mlp_ratio 4, patch 2 x 2 x 1, adaLN-LoRA dim 256, 1024-wide T5 cross-attention, 3D RoPE
  with h/w extrapolation 4 and t 1, no extra learnable position embedding, max 240 x 240 latent
  and 128 frames, a padding-mask channel concatenated to the input).
- `FixerNetConfig`: Fixer's single step (`src/pix2pix_turbo_nocond_cosmos_base_faster_tokenizer.py`:
  timestep 250 in its README's commands, `sigma_data` 1.0 of the pipeline config, the empty-text
  condition as 512 zero T5 tokens) and its default size 576 x 1024.
- `TinyTokenizerConfig`: no NVIDIA fact. NVIDIA's fast tokenizer exists only as a TorchScript
  program inside `base/tokenizer_fast.pth` (its architecture is published nowhere else); for
  tests and the offline demo a plain encoder / decoder pair of the same contract (3 -> 16
  channels, 8x smaller) is built from diffusers' VAE blocks instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

# The tokenizer's latent: 16 channels, 8x spatial compression (CosmosImageTokenizer's
# latent_ch and spatial_compression_factor in cosmos_predict2/tokenizers/tokenizer.py).
LATENT_CHANNELS = 16
TOKENIZER_COMPRESSION = 8
# (height, width) Fixer trains and runs at (its README and inference script).
FIXER_SIZE = (576, 1024)


@dataclass
class DiTConfig:
    """The denoiser: diffusers' `CosmosTransformer3DModel` options in cosmos-predict2's terms.

    Attributes:
        num_layers: transformer blocks (0.6B: 20).
        num_heads: attention heads (0.6B: 20).
        head_dim: channels per head (0.6B: 64, so 1280 wide).
        mlp_ratio: MLP width / model width.
        adaln_lora_dim: rank of the shared adaLN-LoRA modulation.
        text_dim: width of the (empty) T5 text condition.
        patch: spatial patch size (temporal patch 1).
        rope_scale: (t, h, w) RoPE NTK extrapolation ratios.
        max_size: (frames, height, width) of the largest latent (the RoPE table length).
    """

    num_layers: int = 20
    num_heads: int = 20
    head_dim: int = 64
    mlp_ratio: float = 4.0
    adaln_lora_dim: int = 256
    text_dim: int = 1024
    patch: int = 2
    rope_scale: tuple[float, float, float] = (1.0, 4.0, 4.0)
    max_size: tuple[int, int, int] = (128, 240, 240)

    @property
    def width(self) -> int:
        """Model channels (num_heads * head_dim)."""
        return self.num_heads * self.head_dim


@dataclass
class TinyTokenizerConfig:
    """A plain-module stand-in for the fast tokenizer (tests, offline demo): diffusers VAE blocks.

    Attributes:
        block_channels: channels per resolution; 4 levels give the tokenizer's 8x compression.
        layers_per_block: ResNet blocks per level.
        norm_groups: GroupNorm groups.
    """

    block_channels: tuple[int, ...] = (16, 32, 32, 32)
    layers_per_block: int = 1
    norm_groups: int = 8

    @property
    def compression(self) -> int:
        """Spatial downsampling of the encoder (2 per level after the first)."""
        return 2 ** (len(self.block_channels) - 1)


@dataclass
class FixerNetConfig:
    """Everything that defines a FixerNet (saved beside its weights).

    Attributes:
        dit: the DiT's options.
        tokenizer: a tiny plain tokenizer to build; None when the tokenizer comes from NVIDIA's
            `tokenizer_fast.pth` (a TorchScript program, see `tokenizer.py`).
        timestep: the single denoising step, 0..999 (Fixer: 250; sigma = timestep / 1000).
        sigma_data: latent scale of the pipeline (1.0; rectified-flow scaling requires 1.0).
        text_tokens: length of the empty text condition (T5: 512 tokens; all zero).
        default_size: (height, width) the model was trained at.
        seed: weight seed of a randomly initialised (tiny) net.
    """

    dit: DiTConfig = field(default_factory=DiTConfig)
    tokenizer: TinyTokenizerConfig | None = None
    timestep: int = 250
    sigma_data: float = 1.0
    text_tokens: int = 512
    default_size: tuple[int, int] = FIXER_SIZE
    seed: int = 0

    def check(self) -> None:
        """Raises ValueError naming the field that no Fixer can have."""
        if not 0 <= self.timestep <= 999:
            raise ValueError(f"FixerNetConfig.timestep must be in 0..999 (Fixer: 250), got {self.timestep}")
        if abs(self.sigma_data - 1.0) > 1e-6:
            raise ValueError(f"FixerNetConfig.sigma_data must be 1.0 (cosmos-predict2's RectifiedFlowScaling "
                             f"asserts it), got {self.sigma_data}")
        if self.tokenizer is not None and self.tokenizer.compression != TOKENIZER_COMPRESSION:
            raise ValueError(f"FixerNetConfig.tokenizer.block_channels: {len(self.tokenizer.block_channels)} levels "
                             f"compress {self.tokenizer.compression}x; the Fixer DiT expects {TOKENIZER_COMPRESSION}x "
                             "(4 levels)")
        if self.dit.head_dim < 12 or self.dit.head_dim % 2:
            # RoPE splits a head into t / h / w parts of head_dim // 6 * 2 (h, w) and the rest (t)
            raise ValueError(f"FixerNetConfig.dit.head_dim must be even and >= 12 for 3D RoPE, got {self.dit.head_dim}")


# Part of the FixerModule hyperparameters and of saved Fixer files: allowed in weights-only loads.
torch.serialization.add_safe_globals([DiTConfig, TinyTokenizerConfig, FixerNetConfig])
