"""Pretrained backbones of the perceptual losses (torchvision's VGG16, AlexNet, SqueezeNet).

Offline use: the weights are read from torchvision's cache, `$TORCH_HOME/hub/checkpoints/<file>`
(default `~/.cache/torch/hub/checkpoints`). When the file is missing, `require_backbone_file`
raises `FileNotFoundError` naming the file, the URL it comes from and where to put it, instead of
torchvision's bare `URLError` from a failed download. Without pretrained weights a backbone is
randomly initialised under a fixed seed, with a warning that its numbers mean nothing.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["RANDOM_BACKBONE_SEED", "torchvision_cache_path", "require_backbone_file", "load_vgg16", "warn_random_backbone"]

RANDOM_BACKBONE_SEED = 0


def _backbone_weights(net: str) -> Any:
    """The torchvision weights enum the lpips package (and GramLoss) load for `net`."""
    from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

    table = {
        "vgg": VGG16_Weights.IMAGENET1K_V1,
        "vgg16": VGG16_Weights.IMAGENET1K_V1,
        "alex": AlexNet_Weights.IMAGENET1K_V1,
        "squeeze": SqueezeNet1_1_Weights.IMAGENET1K_V1,
    }
    if net not in table:
        raise ValueError(f"unknown backbone {net!r}; choose one of 'vgg', 'alex', 'squeeze'")
    return table[net]


def torchvision_cache_path(net: str = "vgg") -> Path:
    """Where torchvision looks for the pretrained backbone file of `net`.

    `torch.hub.get_dir()` reads $TORCH_HOME at call time, so this follows the environment.
    """
    url = _backbone_weights(net).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def require_backbone_file(net: str = "vgg") -> Path:
    """Returns the cached backbone file for `net`, or raises an error that says what to do.

    Raises:
        FileNotFoundError: the file is not in torchvision's cache. The message names the
            exact path, the download URL and the pretrained_backbone=False escape hatch.
    """
    path = torchvision_cache_path(net)
    if not path.is_file():
        url = _backbone_weights(net).url
        raise FileNotFoundError(
            f"Pretrained {net} backbone weights not found: {path} does not exist, and "
            f"downloading is off (offline machine). Download {url} on a machine with "
            f"internet and place it at exactly {path} (torchvision's cache, "
            f"$TORCH_HOME/hub/checkpoints; set TORCH_HOME to move it), e.g.\n"
            f"    mkdir -p {path.parent} && curl -L -o {path} {url}\n"
            "or pass pretrained_backbone=False (random weights: for plumbing tests only, "
            "the values are not real perceptual distances)."
        )
    return path


def warn_random_backbone(what: str) -> None:
    warnings.warn(
        f"{what}: using a randomly initialised backbone (seed {RANDOM_BACKBONE_SEED}); "
        "its values are NOT real perceptual distances. Use it for tests and offline "
        "plumbing only; never report them as LPIPS/Gram numbers.",
        UserWarning,
        stacklevel=3,
    )


def load_vgg16(pretrained: bool, download: bool = False) -> nn.Sequential:
    """torchvision's VGG16 `features` (conv part only), frozen and in eval mode.

    Only the convolutional `features` are built (the 102M-parameter classifier is never
    allocated); the layer indices match `torchvision.models.vgg16().features`.

    Args:
        pretrained: load ImageNet weights (IMAGENET1K_V1) from torchvision's cache;
            False builds random weights under a fixed seed (and warns).
        download: when the cached file is missing, let torchvision download it instead of
            raising. Off by default: the project must run offline.

    Returns:
        nn.Sequential of 31 modules (conv/relu/maxpool), requires_grad False, eval mode.

    Raises:
        FileNotFoundError: pretrained weights are not cached and download is False; the
            message names `$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth` and the URL.
        RuntimeError: the cached file is unreadable (message names it).
    """
    from torchvision.models import vgg as tv_vgg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_BACKBONE_SEED)
        features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=False)
        for module in features.modules():
            if isinstance(module, nn.Conv2d):  # torchvision VGG's own init
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    if pretrained:
        if download and not torchvision_cache_path("vgg").is_file():
            state = _backbone_weights("vgg").get_state_dict(progress=False, check_hash=True)
            path = torchvision_cache_path("vgg")
        else:
            path = require_backbone_file("vgg")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # corrupt/truncated download
                raise RuntimeError(f"{path}: cannot read VGG16 weights ({error}); delete it and download again") from error
        prefix = "features."
        features_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            features.load_state_dict(features_state)
        except RuntimeError as error:
            raise RuntimeError(f"{path}: not torchvision VGG16 weights ({error})") from error
    else:
        warn_random_backbone("load_vgg16(pretrained=False)")
    return features.eval().requires_grad_(False)
