"""FixerModule: fine-tunes NVIDIA's Fixer (FixerNet) on this project's training pairs.

Fixer's published recipe (nv-tlabs/Fixer README and `src/train_pix2pix_turbo_nocond_cosmos_base_faster_tokenizer.py`):
loss = 1.0 * L2 + 0.3 * LPIPS(VGG), both on images in [-1, 1] (the L2 is 4x the L2 of the same
images in [0, 1]), the LPIPS on one random square crop of side 128..512 at the same place in
both images, on the decoder's unclamped output; AdamW lr 2e-5 (betas 0.9 / 0.999, weight decay
0.01, eps 1e-8), constant; grad-norm clip 1.0; 576 x 1024; batch 1 per GPU on 8 GPUs, 10k steps,
bf16; timestep 250; the DiT and the tokenizer train except the tokenizer's `time_conv` weights
(`set_train`). NVIDIA casts the weights to bf16 and steps them there; `configs/fixer.yaml` uses
Lightning's bf16-mixed (float32 weights). NVIDIA's optimizer list holds the tokenizer's
parameters twice (through the pipeline and the tokenizer), so AdamW steps them twice per
iteration; here each parameter is stepped once.

The net is built in `configure_model` (from a `FixerNetSpec`); checkpoints hold all its weights.
`export_dir` (and `export`) writes NVIDIA's folder layout, which every fixer slot reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lightning_modules.difix.training.fixer_spec import FixerNetSpec
from lightning_modules.image_grids import log_image, tile_grid
from lightning_modules.options import check_learning_rates
from lightning_modules.difix.training.step_logging import log_losses


class FixerModule(pl.LightningModule):
    """Fine-tunes a FixerNet on PairDataModule batches ({"image", "target"} (B, 3, H, W) in [0, 1];
    references, if any, are not used: Fixer takes none).

    Args:
        net: which Fixer to start from (`FixerNetSpec`); None: nvidia/Fixer's pkl.
        w_l2: weight of the L2 loss on [-1, 1] images (Fixer: 1.0).
        w_lpips: weight of LPIPS-VGG (Fixer: 0.3).
        lpips_crop: (smallest, largest) side of the random square LPIPS crop (Fixer: 128, 512),
            capped at the image's shorter side; None: the whole image.
        pretrained_backbone: ImageNet VGG for LPIPS; False = random backbone (tests and offline
            demo only: its values are not LPIPS).
        lr: AdamW learning rate (2e-5).
        betas: AdamW betas.
        weight_decay: AdamW weight decay (0.01).
        eps: AdamW epsilon.
        export_dir: folder the trained Fixer is written to at the end of fit, in NVIDIA's layout
            (`pretrained/pretrained_fixer.pkl`, `base/tokenizer_fast.pth`); None: not written.
        num_log_images: samples in the validation image grid.
    """

    RUNTIME_OPTIONS: ClassVar[frozenset[str]] = frozenset({"export_dir", "num_log_images", "pretrained_backbone"})

    def __init__(self, net: FixerNetSpec | None = None, w_l2: float = 1.0, w_lpips: float = 0.3,
                 lpips_crop: tuple[int, int] | None = (128, 512), pretrained_backbone: bool = True, lr: float = 2e-5,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 1e-2, eps: float = 1e-8,
                 export_dir: str | None = None, num_log_images: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_learning_rates("FixerModule", lr=lr)
        if lpips_crop is not None and not 0 < lpips_crop[0] <= lpips_crop[1]:
            raise ValueError(f"FixerModule: lpips_crop must be (smallest, largest) > 0, got {lpips_crop}")
        self.net_spec = net if net is not None else FixerNetSpec()
        self.net: torch.nn.Module | None = None
        self.lpips: torch.nn.Module | None = None
        self.metrics = torch.nn.ModuleDict({stage: torch.nn.ModuleDict({
            "psnr": PeakSignalNoiseRatio(data_range=1.0), "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            "psnr_input": PeakSignalNoiseRatio(data_range=1.0)}) for stage in ("val", "test")})

    # ------------------------------------------------------------------ building
    def configure_model(self) -> None:
        """Builds the loss network first (a missing VGG fails fast), then the FixerNet (once)."""
        if self.net is not None:
            return
        h = self.hparams
        if h.w_lpips > 0:
            from lightning_modules.difix.training.losses import LPIPSLoss

            if not h.pretrained_backbone:
                rank_zero_warn("FixerModule(pretrained_backbone=False): train/loss_lpips is NOT a real LPIPS value")
            self.lpips = LPIPSLoss(net="vgg", pretrained_backbone=h.pretrained_backbone)
        net = self.net_spec.build()
        net.set_trainable()
        self.net = net

    def _require_net(self) -> torch.nn.Module:
        if self.net is None:
            self.configure_model()
        assert self.net is not None
        return self.net

    # ------------------------------------------------------------------ training
    def compute_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """{"loss", "loss_l2", "loss_lpips"} for a pair batch, as Fixer's training loop computes them."""
        net = self._require_net()
        h = self.hparams
        source, target = batch["image"].float() * 2 - 1, batch["target"].float() * 2 - 1
        pred = net.restore(source)
        loss_l2 = F.mse_loss(pred.float(), target)
        loss_lpips = pred.new_zeros(())
        if self.lpips is not None:
            a, b = self._crop(pred), self._crop(target, again=True)
            loss_lpips = self.lpips((a + 1) / 2, (b + 1) / 2)  # LPIPSLoss maps [0, 1] back to [-1, 1]
        loss = h.w_l2 * loss_l2 + h.w_lpips * loss_lpips
        return {"loss": loss, "loss_l2": loss_l2, "loss_lpips": loss_lpips}

    def _crop(self, x: Tensor, again: bool = False) -> Tensor:
        """One random square crop, the same window for the second call (the target)."""
        if self.hparams.lpips_crop is None:
            return x
        if not again:
            height, width = x.shape[-2:]
            lo, hi = self.hparams.lpips_crop
            side = int(torch.randint(min(lo, height, width), min(hi, height, width) + 1, ()).item())
            top = int(torch.randint(0, height - side + 1, ()).item())
            left = int(torch.randint(0, width - side + 1, ()).item())
            self._window = (top, left, side)
        top, left, side = self._window
        return x[..., top:top + side, left:left + side]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return log_losses(self, self.compute_losses(batch), batch["image"].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        net = self._require_net()
        h = self.hparams
        params = [p for p in net.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay, eps=h.eps,
                                 foreach=True)

    # ------------------------------------------------------------------ validation / test
    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        net = self._require_net()
        image, target = batch["image"].float(), batch["target"].float()
        fixed = net(image).float()
        m = self.metrics[stage]
        m["psnr"](fixed, target)
        m["ssim"](fixed, target)
        m["psnr_input"](image, target)
        self.log_dict({f"{stage}/{k}": v for k, v in m.items()}, on_step=False, on_epoch=True,
                      batch_size=image.shape[0])
        if batch_idx == 0 and not self.trainer.sanity_checking:
            n = min(self.hparams.num_log_images, image.shape[0])
            tiles = torch.stack([image[:n], fixed[:n], target[:n]], dim=1).flatten(0, 1)
            log_image(self.loggers, f"{stage}/input_fixed_target", tile_grid(list(tiles), columns=3), self.global_step)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """val/psnr, val/ssim of the fixed output, val/psnr_input of the render; a grid."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """As validation_step, under test/."""
        self._evaluate(batch, batch_idx, "test")

    # ------------------------------------------------------------------ files
    def on_train_end(self) -> None:
        """Writes the trained Fixer to `export_dir` (rank zero), when set."""
        if self.hparams.export_dir is not None:
            self._export_rank_zero(self.hparams.export_dir)

    @rank_zero_only
    def _export_rank_zero(self, folder: str) -> None:
        self.export(folder)

    def export(self, folder: str | Path) -> Path:
        """Writes the current Fixer in NVIDIA's layout; returns the pkl's path."""
        from lightning_modules.difix.cosmos.load import save_fixer_folder

        return save_fixer_folder(self._require_net(), folder)
