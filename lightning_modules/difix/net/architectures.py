"""Constructor configs for DifixNet components: a tiny model for the tests and the demo, and SD-Turbo's shape.

Nothing here downloads anything. `build_components` turns these plain dicts into diffusers /
transformers modules under a fixed seed, so the same seed always gives the same weights.

The tiny text encoder needs a tokenizer. A CLIP tokenizer normally ships a 49k-entry BPE vocab
from the hub; offline we build a byte-level one in memory instead: the 256 byte symbols (and
their end-of-word forms) plus CLIP's two special tokens, no merges (514 entries, fits the tiny
vocab of 1000). It tokenizes any prompt deterministically, which is all the tiny model needs.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

# SD-style epsilon-prediction schedule (SD-Turbo's betas: scaled-linear 0.00085..0.012 / 1000).
# clip_sample False as in SD-Turbo's own scheduler config: x0 must not be clipped to [-1, 1]
# because latents are not in that range.
SD_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
}

TINY_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}

# Four blocks so the VAE downsamples 8x like SD's and has SD's four skip connections.
TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [32, 64, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "scaling_factor": 0.18215,
}

TINY_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 1000,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}

# SD-Turbo (SD 2.1 architecture) written out, for random-weight benchmarks without a download.
SD_TURBO_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

SD_TURBO_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}

TINY_CONFIG: dict[str, Any] = {
    "unet": TINY_UNET,
    "vae": TINY_VAE,
    "scheduler": SD_SCHEDULER,
    "text_encoder": TINY_TEXT_ENCODER,
}

# The SD-Turbo text encoder (OpenCLIP ViT-H, 340M parameters) is left out: a random one gives a
# random prompt embedding anyway, so a seeded (1, 77, 1024) embedding stands in for it.
SD_TURBO_CONFIG: dict[str, Any] = {
    "unet": SD_TURBO_UNET,
    "vae": SD_TURBO_VAE,
    "scheduler": SD_SCHEDULER,
    "text_encoder": None,
}

CONFIGS: dict[str, dict[str, Any]] = {"tiny": TINY_CONFIG, "sd-turbo": SD_TURBO_CONFIG}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, map(chr, cs)))


def build_tiny_tokenizer() -> Any:
    """A byte-level CLIPTokenizer built in memory (514 tokens, no merges, works offline)."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab[s] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_components(config: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Builds diffusers/transformers modules from constructor dicts under a fixed seed.

    The global RNG is left untouched (forked), so building a model inside a seeded run does
    not shift that run's random stream.

    Args:
        config: dict with "unet", "vae", "scheduler" constructor dicts and "text_encoder"
            (a CLIPTextConfig dict, or None for no text encoder).
        seed: seed for the random weights.

    Returns:
        dict with "unet", "vae", "scheduler", and "text_encoder"/"tokenizer" (None when the
        config has no text encoder).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    config = copy.deepcopy(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**config["unet"])
        vae = AutoencoderKL(**config["vae"])
        text_encoder = tokenizer = None
        if config.get("text_encoder") is not None:
            from transformers import CLIPTextConfig, CLIPTextModel

            text_encoder = CLIPTextModel(CLIPTextConfig(**config["text_encoder"]))
            tokenizer = build_tiny_tokenizer()
    scheduler = DDPMScheduler(**config["scheduler"])
    return {
        "unet": unet,
        "vae": vae,
        "scheduler": scheduler,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def save_components(components: dict[str, Any], folder: str | Path) -> Path:
    """Writes components in the diffusers Stable Diffusion folder layout.

    unet/, vae/, scheduler/, text_encoder/, tokenizer/ under `folder`, loadable with
    `net_from_pretrained(folder)` (used by tests to exercise the pretrained path offline).
    """
    folder = Path(folder)
    for name in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        if components.get(name) is None:
            raise ValueError(f"save_components: component '{name}' is missing; "
                             "an SD folder needs all five")
        components[name].save_pretrained(folder / name)
    return folder
