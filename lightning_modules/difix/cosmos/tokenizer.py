"""Fixer's image tokenizer: an encoder / decoder pair with per-channel latent statistics.

What NVIDIA ships (`base/tokenizer_fast.pth`, read by cosmos-predict2's `CosmosImageTokenizer`
in `tokenizers/tokenizer.py`, the tokenizer of its 0.6B "fast tokenizer" text-to-image config
that Fixer uses): a torch file holding a dict
`{"encoder": bytes, "decoder": bytes, "mean_std": (mean, std)}`, where the two byte strings are
TorchScript archives and mean / std have 16 values. Its architecture exists only in those
programs: it is not the Wan2.1 VAE (cosmos-predict2 keeps that one in `TokenizerInterface` /
`VAE`, for the other configs), and no source for it is published. So the programs are run as
they are, with their weights replaced by Fixer's (`state_dict_vae` holds them under
`encoder.*` / `decoder.*`, the programs' own parameter names). A TorchScript program is code
from the file: load only files you trust.

The arithmetic around the two programs (`CosmosImageTokenizer.encode` / `.decode` with
squeeze_for_image and apply_mean_std) is this module's: images (B, 3, 1, H, W) in [-1, 1] lose
the frame axis, are cast to the tokenizer's dtype, encoded (a tuple output gives its first
element), normalised per channel, ((z - mean) / std), and cast back; decoding inverts it.

`tiny_tokenizer` builds a plain-module pair with the same contract (tests, offline demo).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.difix.cosmos.config import LATENT_CHANNELS, TOKENIZER_COMPRESSION, TinyTokenizerConfig
from lightning_modules.safe_load import read_torch_file

TOKENIZER_KEYS = ("encoder", "decoder", "mean_std")


class ImageTokenizer(nn.Module):
    """Encoder + decoder with CosmosImageTokenizer's latent normalisation.

    Args:
        encoder: (B, 3, H, W) in [-1, 1] -> (B, 16, H/8, W/8) (or a tuple whose first item is).
        decoder: (B, 16, H/8, W/8) -> (B, 3, H, W) in about [-1, 1].
        latent_mean: (16,) per-channel mean subtracted after encoding.
        latent_std: (16,) per-channel std divided by after encoding.
        origin: where the programs came from (for the load line).
    """

    compression = TOKENIZER_COMPRESSION

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_mean: Tensor, latent_std: Tensor,
                 origin: str = "tiny plain encoder / decoder") -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        shape = (1, LATENT_CHANNELS, 1, 1, 1)
        # Not in the state dict, as in CosmosImageTokenizer: they come with the programs.
        self.register_buffer("latent_mean", latent_mean.detach().float().reshape(shape).clone(), persistent=False)
        self.register_buffer("latent_std", latent_std.detach().float().reshape(shape).clone(), persistent=False)
        self.origin = origin

    @property
    def dtype(self) -> torch.dtype:
        """The dtype its weights are in, which it computes in."""
        return next(self.parameters()).dtype

    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, 1, H, W) in [-1, 1] -> normalised latent (B, 16, 1, H/8, W/8) in the input's dtype."""
        dtype = self.dtype
        latent = self.encoder(images.to(dtype).squeeze(2))
        if isinstance(latent, (tuple, list)):
            latent = latent[0]
        latent = latent.unsqueeze(2)
        latent = (latent - self.latent_mean.to(latent.dtype)) / self.latent_std.to(latent.dtype)
        return latent.to(images.dtype)

    def decode(self, latent: Tensor) -> Tensor:
        """Normalised latent (B, 16, 1, h, w) -> (B, 3, 1, 8h, 8w) in the latent's dtype."""
        dtype = self.dtype
        state = latent.to(dtype) * self.latent_std.to(dtype) + self.latent_mean.to(dtype)
        return self.decoder(state.squeeze(2).to(dtype)).unsqueeze(2).to(latent.dtype)

    def file_payload(self) -> dict[str, Any]:
        """This tokenizer in NVIDIA's `tokenizer_fast.pth` layout (TorchScript bytes + mean_std),
        its current weights included; plain modules are traced first."""
        return {"encoder": _program_bytes(self.encoder, torch.zeros(1, 3, 64, 64)),
                "decoder": _program_bytes(self.decoder, torch.zeros(1, LATENT_CHANNELS, 8, 8)),
                "mean_std": (self.latent_mean.detach().float().flatten().cpu().clone(),
                             self.latent_std.detach().float().flatten().cpu().clone())}


def tiny_tokenizer(config: TinyTokenizerConfig, seed: int = 0) -> ImageTokenizer:
    """A randomly initialised plain encoder / decoder (diffusers VAE blocks), identity latent stats."""
    from diffusers.models.autoencoders.vae import Decoder, Encoder

    levels = len(config.block_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = Encoder(in_channels=3, out_channels=LATENT_CHANNELS, down_block_types=("DownEncoderBlock2D",) * levels,
                          block_out_channels=tuple(config.block_channels), layers_per_block=config.layers_per_block,
                          norm_num_groups=config.norm_groups, double_z=False, mid_block_add_attention=False)
        decoder = Decoder(in_channels=LATENT_CHANNELS, out_channels=3, up_block_types=("UpDecoderBlock2D",) * levels,
                          block_out_channels=tuple(config.block_channels), layers_per_block=config.layers_per_block,
                          norm_num_groups=config.norm_groups, mid_block_add_attention=False)
    return ImageTokenizer(encoder, decoder, torch.zeros(LATENT_CHANNELS), torch.ones(LATENT_CHANNELS))


def read_tokenizer_file(path: str | Path) -> ImageTokenizer:
    """NVIDIA's `tokenizer_fast.pth` (or this project's copy of that layout) as an ImageTokenizer.

    The file is read weights-only; its two TorchScript programs are then loaded on the CPU.

    Raises:
        FileNotFoundError / ValueError: naming the file and what is missing or broken.
    """
    path = Path(path)
    payload = read_torch_file(path, "Fixer tokenizer")
    if not isinstance(payload, dict) or any(k not in payload for k in TOKENIZER_KEYS):
        have = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"Fixer tokenizer {path}: expected a dict with {list(TOKENIZER_KEYS)} (NVIDIA's "
                         f"base/tokenizer_fast.pth), found {have}; download it again with "
                         "`hf download nvidia/Fixer base/tokenizer_fast.pth --local-dir DIR`")
    mean_std = payload["mean_std"]
    stats = list(mean_std) if isinstance(mean_std, (tuple, list)) else []
    if len(stats) != 2 or any(not isinstance(s, Tensor) or s.numel() != LATENT_CHANNELS for s in stats):
        raise ValueError(f"Fixer tokenizer {path}: 'mean_std' must be two tensors of {LATENT_CHANNELS} values")
    encoder = _load_program(payload["encoder"], path, "encoder")
    decoder = _load_program(payload["decoder"], path, "decoder")
    return ImageTokenizer(encoder, decoder, stats[0], stats[1], origin=f"TorchScript programs of {path.name}")


def _load_program(data: Any, path: Path, part: str) -> nn.Module:
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"Fixer tokenizer {path}: '{part}' is {type(data).__name__}, not a TorchScript archive (bytes)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
        try:
            return torch.jit.load(io.BytesIO(bytes(data)), map_location="cpu")
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"Fixer tokenizer {path}: its {part} does not load as TorchScript ({first}); the "
                             "file is damaged or needs an operator library this torch lacks") from err


def _program_bytes(module: nn.Module, example: Tensor) -> bytes:
    """TorchScript archive bytes of a scripted module, or of a plain one traced on `example`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.* deprecation notices
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        if not isinstance(module, torch.jit.ScriptModule):
            param, was_training = next(module.parameters()), module.training
            plain = module.eval()
            module = torch.jit.trace(plain, example.to(param.device, param.dtype), check_trace=False)
            plain.train(was_training)
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
    return buffer.getvalue()
