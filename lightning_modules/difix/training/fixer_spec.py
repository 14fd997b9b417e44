"""FixerNetSpec: which FixerNet (NVIDIA's Fixer, Cosmos-Predict2 0.6B) a FixerModule fine-tunes.

Built in `FixerModule.configure_model` (never at construction: config checks load no weights).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from lightning_modules.difix.cosmos.config import DiTConfig, FixerNetConfig, TinyTokenizerConfig


def tiny_fixer_config() -> FixerNetConfig:
    """The random-weight Fixer of tests and the offline demo (a 2-block DiT, a 4-level tokenizer)."""
    return FixerNetConfig(dit=DiTConfig(num_layers=2, num_heads=2, head_dim=16, adaln_lora_dim=16, text_dim=32),
                          tokenizer=TinyTokenizerConfig(), text_tokens=8)


@dataclass
class FixerNetSpec:
    """What fine-tuning starts from.

    Attributes:
        pretrained: "nvidia/Fixer" (the Hugging Face cache or a download), a folder from
            `hf download nvidia/Fixer --local-dir DIR` (or the one holding `models/`), a
            `pretrained_fixer.pkl` of that layout (its `base/` files beside `pretrained/`), or
            a folder this module exported; None builds a random-weight net of `config`'s sizes.
        start: "pretrained": Fixer's weights (NVIDIA's `--pretrained_path`); "base": the
            Cosmos-Predict2 0.6B base DiT and the fast tokenizer (NVIDIA's default).
        tokenizer: `base/tokenizer_fast.pth` named directly (else found beside `pretrained`).
        base_dit: `base/model_fast_tokenizer.pt` named directly (for start "base").
        config: the net's sizes: with `pretrained` None those of the random-weight net (None:
            `tiny_fixer_config`); else used only for a pkl that holds none and whose sizes
            cannot be read off its weights (None: read them off).
        timestep: the single denoising step (Fixer: 250).
    """

    pretrained: str | None = "nvidia/Fixer"
    start: Literal["pretrained", "base"] = "pretrained"
    tokenizer: str | None = None
    base_dit: str | None = None
    config: FixerNetConfig | None = None
    timestep: int = 250

    def build(self) -> torch.nn.Module:
        """The FixerNet, float32 on the CPU (loads weights: call from `configure_model`).

        Raises:
            ValueError / FileNotFoundError: naming the field and what to download where.
        """
        from lightning_modules.difix.cosmos.files import find_fixer_files, fixer_files
        from lightning_modules.difix.cosmos.load import load_fixer_net
        from lightning_modules.difix.cosmos.net import FixerNet

        if self.pretrained is None and self.tokenizer is None:
            return FixerNet(replace(self.config or tiny_fixer_config(), timestep=self.timestep))
        found = find_fixer_files(self.pretrained) if self.pretrained is not None else None
        if self.pretrained is not None and found is None:
            raise ValueError(f"FixerNetSpec.pretrained {self.pretrained!r}: not nvidia/Fixer, nor a folder in its "
                             "layout (pretrained/pretrained_fixer.pkl, base/tokenizer_fast.pth), nor a Fixer pkl")
        if self.tokenizer is not None or self.base_dit is not None:
            found = fixer_files(tokenizer=self.tokenizer or (found.tokenizer if found else None),
                                pretrained=found.pretrained if found else None,
                                base_dit=self.base_dit or (found.base_dit if found else None))
        assert found is not None
        net = load_fixer_net(found, start=self.start, config=self.config)
        net.config = replace(net.config, timestep=self.timestep)
        net.config.check()
        return net


# Part of FixerModule's hyperparameters, so checkpoints hold it; allow it in weights-only loading.
torch.serialization.add_safe_globals([FixerNetSpec])
