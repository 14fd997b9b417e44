"""Perceptual losses for training the fixer: LPIPS (VGG) and the VGG16 Gram (style) loss.

Both take images in [0, 1] (the project's convention) and return a scalar. Both are
frozen, always in eval mode (LPIPS has dropout in its linear heads that a parent's
`.train()` would otherwise switch on) and absent from `state_dict()`: their weights come
from torchvision / the lpips package, so checkpoints of the fixer do not carry ~60 MB of
VGG and load fine without them.

Offline use: the pretrained backbones come from torchvision's cache (``backbones.py``); a
missing file is a `FileNotFoundError` naming it, the URL it comes from and where to put it.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn as nn

from lightning_modules.difix.training.backbones import RANDOM_BACKBONE_SEED, load_vgg16, require_backbone_file, warn_random_backbone

# torchvision vgg16.features indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
VGG16_GRAM_LAYERS: tuple[int, ...] = (3, 8, 15, 22, 29)
# Per-layer weights of the reference code (STYLE_WEIGHTS in Difix3D's src/loss.py).
GRAM_LAYER_WEIGHTS: tuple[float, ...] = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenLoss(nn.Module):
    """Base for losses with fixed weights: no grads, always eval, empty state_dict.

    The parameters are rebuilt from torchvision / lpips at construction, so they are kept
    out of checkpoints: `state_dict()` drops them and `load_state_dict()` does not report
    them missing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_state_dict_post_hook(_drop_own_state)
        self.register_load_state_dict_pre_hook(_fill_own_state)

    def train(self, mode: bool = True) -> FrozenLoss:
        """Ignores `mode`: the loss networks always run in eval mode."""
        return super().train(False)

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()


def _drop_own_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]


def _fill_own_state(
    module: nn.Module,
    state_dict: dict,
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list,
    unexpected_keys: list,
    error_msgs: list,
) -> None:
    # Supply the current (fixed) values so a strict load of a checkpoint without them passes.
    # Mirrors nn.Module._save_to_state_dict: shared submodules appear under every name
    # (lpips registers its heads as lin0..lin4 and again as lins.*); non-persistent
    # buffers never do.
    for sub_name, sub in module.named_modules(remove_duplicate=False):
        sub_prefix = f"{prefix}{sub_name}." if sub_name else prefix
        tensors = dict(sub._parameters)
        tensors.update({k: v for k, v in sub._buffers.items() if k not in sub._non_persistent_buffers_set})
        for name, tensor in tensors.items():
            if tensor is not None:
                state_dict.setdefault(sub_prefix + name, tensor.detach())


class LPIPSLoss(FrozenLoss):
    """LPIPS distance from the `lpips` package, as a mean over the batch.

    The linear heads ship inside the lpips package (they work offline); the backbone comes
    from torchvision's cache (see `require_backbone_file`).

    Args:
        net: LPIPS backbone, "vgg" (the paper's choice), "alex" or "squeeze".
        pretrained_backbone: ImageNet backbone from torchvision's cache. False: random
            backbone under a fixed seed, with a warning (values are not real LPIPS).
        download: let torchvision download a missing backbone instead of raising.
    """

    def __init__(
        self,
        net: Literal["vgg", "alex", "squeeze"] = "vgg",
        pretrained_backbone: bool = True,
        download: bool = False,
    ) -> None:
        super().__init__()
        import lpips

        if pretrained_backbone and not download:
            require_backbone_file(net)
        if not pretrained_backbone:
            warn_random_backbone(f"LPIPSLoss(net={net!r}, pretrained_backbone=False)")
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            # lpips 0.1.4 calls torchvision with the deprecated `pretrained=` argument.
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            torch.manual_seed(RANDOM_BACKBONE_SEED)
            self.lpips = lpips.LPIPS(net=net, pnet_rand=not pretrained_backbone, verbose=False)
        self.net = net
        self.pretrained_backbone = pretrained_backbone
        self._freeze()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS(pred, target) averaged over the batch.

        Args:
            pred: (B, 3, H, W) in [0, 1]; gradients flow to it.
            target: (B, 3, H, W) in [0, 1].

        Returns:
            Scalar tensor (float32).
        """
        _check_pair(pred, target, "LPIPSLoss")
        return self.lpips(pred.float(), target.float(), normalize=True).mean()


class GramLoss(FrozenLoss):
    """VGG16 Gram-matrix (style) loss of Difix3D, on one random crop.

    What is computed, exactly (reference convention, `normalization="reference"`): the two
    images are cropped at the same random `crop_size` x `crop_size` window (no crop along a
    side shorter than `crop_size`), ImageNet-normalised and passed through VGG16; for each
    layer l in relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 with features F (B, d, h, w)
    flattened to (B, d, N), N = h*w, the unnormalised Gram G = F F^T (B, d, d) and

        loss_l = mean_{b,i,j} (G_pred - G_target)^2 / (d * h * w),
        loss   = sum_l w_l * loss_l.

    This is "per layer the mean squared difference of Gram matrices divided by d*h*w"
    (the paper) and the reference code's `gram_loss` for batch size 1. The reference code
    reshapes the batch into the channel axis ((B*d, N) features, a (B*d, B*d) Gram with
    cross-image blocks); `cross_batch=True` reproduces that, the default keeps images
    independent so the value does not depend on what else is in the batch.

    `normalization="gatys"` instead divides each Gram by d*h*w first and takes the plain
    mean squared difference (= reference value / (d*h*w)): scale-free across crop sizes,
    but lambda_gram from the paper (0.5) / README (1.0) was tuned for "reference".

    Gradients flow to `pred` only (the target is data: its features run under no_grad).
    Grams are accumulated in float32 even under autocast/bf16 (sums over 160k positions).

    Args:
        pretrained_backbone: ImageNet VGG16 from torchvision's cache; False: random
            weights under a fixed seed, with a warning.
        crop_size: side of the random square crop (400 in the paper); None: no crop.
        layer_weights: 5 weights for relu1_2 .. relu5_3.
        normalization: "reference" or "gatys", see above.
        cross_batch: reproduce the reference code's batch-mixing Gram.
        download: let torchvision download a missing backbone instead of raising.
    """

    def __init__(
        self,
        pretrained_backbone: bool = True,
        crop_size: int | None = 400,
        layer_weights: Sequence[float] = GRAM_LAYER_WEIGHTS,
        normalization: Literal["reference", "gatys"] = "reference",
        cross_batch: bool = False,
        download: bool = False,
    ) -> None:
        super().__init__()
        if len(layer_weights) != len(VGG16_GRAM_LAYERS):
            raise ValueError(f"GramLoss: layer_weights needs {len(VGG16_GRAM_LAYERS)} values (relu1_2..relu5_3), got {list(layer_weights)}")
        if crop_size is not None and crop_size <= 0:
            raise ValueError(f"GramLoss: crop_size must be positive or None, got {crop_size}")
        if normalization not in ("reference", "gatys"):
            raise ValueError(f"GramLoss: normalization must be 'reference' or 'gatys', got {normalization!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GramLoss warns once below, with its own name
            vgg = load_vgg16(pretrained_backbone, download=download)
        if not pretrained_backbone:
            warn_random_backbone("GramLoss(pretrained_backbone=False)")
        self.vgg = vgg[: VGG16_GRAM_LAYERS[-1] + 1]  # nothing after relu5_3 is needed
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.crop_size = crop_size
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.normalization = normalization
        self.cross_batch = cross_batch
        self._freeze()

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of [0, 1] images.

        Args:
            images: (B, 3, H, W) in [0, 1] (ImageNet normalisation is applied here).

        Returns:
            5 tensors (B, d_l, h_l, w_l), d = 64, 128, 256, 512, 512.
        """
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        out = []
        for index, layer in enumerate(self.vgg):
            x = layer(x)
            if index in VGG16_GRAM_LAYERS:
                out.append(x)
        return out

    def random_crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, crop_h, crop_w) drawn from torch's global RNG (seeded by Lightning)."""
        crop_h = height if self.crop_size is None else min(self.crop_size, height)
        crop_w = width if self.crop_size is None else min(self.crop_size, width)
        top = int(torch.randint(0, height - crop_h + 1, (1,)).item())
        left = int(torch.randint(0, width - crop_w + 1, (1,)).item())
        return top, left, crop_h, crop_w

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted Gram loss (a float32 scalar) of `pred` against `target`, both (B, 3, H, W) in
        [0, 1], on one random crop they share; gradients flow to `pred`."""
        _check_pair(pred, target, "GramLoss")
        top, left, crop_h, crop_w = self.random_crop_box(*pred.shape[-2:])
        window = (..., slice(top, top + crop_h), slice(left, left + crop_w))
        pred_features = self.features(pred[window])
        with torch.no_grad():
            target_features = self.features(target[window])
        return gram_loss_from_features(
            pred_features, target_features, self.layer_weights, self.normalization, self.cross_batch
        )


def gram_matrix(features: torch.Tensor, cross_batch: bool = False) -> torch.Tensor:
    """Unnormalised Gram matrix F F^T, computed in float32.

    Args:
        features: (B, d, h, w).
        cross_batch: flatten the batch into the channel axis (reference code): returns
            one (B*d, B*d) matrix as a (1, B*d, B*d) tensor.

    Returns:
        (B, d, d), or (1, B*d, B*d) with cross_batch.
    """
    b, d, h, w = features.shape
    flat = features.float().reshape(1 if cross_batch else b, -1, h * w)
    # autocast would run this matmul in bf16/fp16: sums over up to 160k positions need fp32.
    with torch.autocast(device_type=features.device.type, enabled=False):
        return flat @ flat.transpose(1, 2)


def gram_loss_from_features(
    pred_features: Sequence[torch.Tensor],
    target_features: Sequence[torch.Tensor],
    layer_weights: Sequence[float],
    normalization: Literal["reference", "gatys"] = "reference",
    cross_batch: bool = False,
) -> torch.Tensor:
    """sum_l w_l * mean((G_pred,l - G_target,l)^2) / (d h w)  (see GramLoss for "gatys").

    Args:
        pred_features: per-layer (B, d, h, w) features of the prediction.
        target_features: same shapes, of the target.
        layer_weights: one weight per layer.
        normalization: "reference" or "gatys".
        cross_batch: reference code's batch-mixing Gram.

    Returns:
        Scalar float32 tensor.
    """
    total = pred_features[0].new_zeros((), dtype=torch.float32)
    for weight, fp, ft in zip(layer_weights, pred_features, target_features, strict=True):
        _, d, h, w = fp.shape
        diff = gram_matrix(fp, cross_batch) - gram_matrix(ft, cross_batch)
        if normalization == "reference":
            layer = diff.pow(2).mean() / (d * h * w)
        else:
            layer = (diff / (d * h * w)).pow(2).mean()
        total = total + weight * layer
    return total


def _check_pair(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.ndim != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
        raise ValueError(
            f"{name}: expects pred and target of the same shape (B, 3, H, W), got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
