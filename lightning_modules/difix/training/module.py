"""DifixModule: trains / evaluates / applies DifixNet (losses, optimizer, logging, checkpoints).

The network is built in `configure_model`, so `--print_config`, config checks and module
construction never load diffusion weights. Checkpoints hold only the trained tensors
(`DifixNet.trainable_state_dict`: UNet or UNet-LoRA, decoder LoRA, skip convs, cached prompt
embedding) plus `difix_net_config`, which is all `net_from_checkpoint` needs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.functional.image import structural_similarity_index_measure as ssim
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from datamodules.files.image_io import save_image

from lightning_modules.difix.fixers.ready import ReadyFixer
from lightning_modules.difix.net.net import DifixNet
from lightning_modules.image_grids import log_image, tile_grid
from lightning_modules.difix.training.net_spec import DifixNetSpec
from lightning_modules.difix.training.schedules import cosine_to_tenth
from lightning_modules.difix.training.settings import AdamWSettings, FixerLoss
from lightning_modules.difix.training.step_logging import log_losses


class DifixModule(pl.LightningModule):
    """Fine-tunes an SD-Turbo-architecture DifixNet on (degraded, target, reference) pairs.

    Loss = w_l2 * L2 + w_lpips * LPIPS(VGG) + w_gram * Gram (Gram after a warm-up, on a random
    crop; `FixerLoss`). Batches are PairDataModule's: {"image": (B,3,H,W) degraded, "target": (B,3,H,W),
    "refs": (B,K,3,H,W), "prompt": [str], "name": [str]}, all in [0, 1]. The batch prompt is
    not used: the net's prompt (`net.prompt`) is encoded once and cached.

    Args:
        net: which DifixNet to fine-tune (`DifixNetSpec`: pretrained weights and net options);
            None: SD-Turbo with the paper's options.
        cache_dir: Hugging Face cache folder (default $HF_HOME/hub).
        gradient_checkpointing: trade compute for memory in the UNet.
        loss: loss weights, Gram warm-up and crop, reference supervision (`FixerLoss`); None:
            the paper's.
        optimizer: AdamW's learning rate, betas, weight decay and schedule (`AdamWSettings`);
            None: the paper's.
        pretrained_backbone: ImageNet VGG for LPIPS/Gram; False = random backbone (tests and
            offline demo only: LPIPS/Gram values are then not real).
        num_log_images: samples in the validation image grid.
        predict_output_dir: folder the predict step writes fixed PNGs to.
        predict_resize_to: (height, width) the predict step runs the fixer at (e.g. [576, 1024]
            as the reference code, Lanczos there and back); None: the net's own size policy.
    """

    # Options that do not change the trained fixer: with `--ckpt_path` the command line's value
    # wins over the checkpoint's (difix3d/cli.py's DifixCLI).
    RUNTIME_OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"cache_dir", "gradient_checkpointing", "num_log_images", "predict_output_dir", "predict_resize_to",
         "pretrained_backbone"}
    )

    def __init__(
        self,
        net: DifixNetSpec | None = None,
        cache_dir: str | None = None,
        gradient_checkpointing: bool = False,
        loss: FixerLoss | None = None,
        optimizer: AdamWSettings | None = None,
        pretrained_backbone: bool = True,
        num_log_images: int = 4,
        predict_output_dir: str = "outputs/difix_predict",
        predict_resize_to: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.loss_settings = loss or FixerLoss()
        self.optimizer_settings = optimizer or AdamWSettings()
        self.net_spec = net if net is not None else DifixNetSpec()
        self.net: DifixNet | None = None
        self.fixer: ReadyFixer | None = None  # the net as a fixer, made with it in configure_model
        self.lpips: torch.nn.Module | None = None
        self.gram: torch.nn.Module | None = None
        # One metric set per stage; "<metric>" scores the fixed output, "<metric>_input" the raw input.
        self.metrics = torch.nn.ModuleDict({stage: _metric_set() for stage in ("val", "test")})

    # ------------------------------------------------------------------ building
    def configure_model(self) -> None:
        """Builds DifixNet and the loss networks (once; Lightning may call this repeatedly)."""
        if self.net is not None:
            return
        h = self.hparams
        from lightning_modules.difix.training.losses import GramLoss, LPIPSLoss

        # Losses first: a missing VGG file fails in a second, before SD-Turbo's 5 GB load.
        if not h.pretrained_backbone:
            rank_zero_warn(
                "DifixModule(pretrained_backbone=False): LPIPS and Gram use a random VGG backbone; "
                "train/loss_lpips and train/loss_gram are NOT real LPIPS / Gram values (tests / offline demo "
                "only), and val/lpips, test/lpips are not computed."
            )
        self.lpips = LPIPSLoss(net="vgg", pretrained_backbone=h.pretrained_backbone)
        w = self.loss_settings
        if w.w_gram > 0:
            self.gram = GramLoss(pretrained_backbone=h.pretrained_backbone, crop_size=w.gram_crop_size,
                                 cross_batch=w.gram_cross_batch)
        # The one dispatcher for every fixer name (hub id / folder, reference pkl, prior,
        # DifixModule checkpoint or export, tiny), as everywhere a fixer is named.
        self.net = self.net_spec.build(cache_dir=h.cache_dir, gradient_checkpointing=h.gradient_checkpointing)
        # Validation, test and predict run the net as every fixer runs: its size policy, output checks.
        self.fixer = ReadyFixer.around(self.net, name=f"DifixModule({self.net_spec.name})")

    def _require_net(self) -> DifixNet:
        if self.net is None:
            self.configure_model()
        assert self.net is not None
        return self.net

    # ------------------------------------------------------------------ training
    def compute_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Loss terms for a pair batch.

        Returns:
            dict with "loss", "loss_l2", "loss_lpips", "loss_gram", "loss_ssim" scalars.
        """
        net = self._require_net()
        w = self.loss_settings
        views = net.stack_views(batch["image"], batch.get("refs"))
        target = batch["target"]
        size, policy = tuple(views.shape[-2:]), self.fixer.policy
        if w.on_references and views.shape[1] > 1:
            pred = policy.to_input(net.forward_views(policy.to_model(views), all_views=True), size).flatten(0, 1)
            target = torch.cat([target[:, None], views[:, 1:]], dim=1).flatten(0, 1)
        else:
            pred = policy.to_input(net.forward_views(policy.to_model(views), all_views=False)[:, 0], size)
        pred, target = pred.float(), target.float()
        zero = pred.new_zeros(())
        loss_l2 = F.mse_loss(pred, target)
        loss_lpips = self.lpips(pred, target) if w.w_lpips > 0 else zero
        gram_on = self.gram is not None and self.global_step >= w.gram_warmup_steps
        loss_gram = self.gram(pred, target) if gram_on else zero
        # 1 - SSIM on predictions clamped to the image range (SSIM's constants assume [0, 1]).
        loss_ssim = 1 - ssim(pred.clamp(0, 1), target, data_range=1.0) if w.w_ssim > 0 else zero
        loss = w.w_l2 * loss_l2 + w.w_lpips * loss_lpips + w.w_gram * loss_gram + w.w_ssim * loss_ssim
        return {"loss": loss, "loss_l2": loss_l2, "loss_lpips": loss_lpips, "loss_gram": loss_gram,
                "loss_ssim": loss_ssim}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return log_losses(self, self.compute_losses(batch), batch["image"].shape[0])

    def configure_optimizers(self) -> Any:
        net = self._require_net()
        o = self.optimizer_settings
        skip_ids = {id(p) for p in net.skips.parameters()}
        groups = [
            {"params": [p for p in net.trainable_parameters() if id(p) not in skip_ids], "lr": o.lr},
            {"params": [p for p in net.skips.parameters() if p.requires_grad], "lr": o.lr * o.skip_lr_scale},
        ]
        # foreach: one op per step for all (~400 for the tiny net) tensors instead of a Python loop
        # over them, torch's default on GPU but not on CPU; the same arithmetic, bit for bit.
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, foreach=True)
        if o.schedule == "constant":
            return optimizer
        total = self.trainer.max_steps
        if total is None or total <= 0:
            raise ValueError("DifixModule(optimizer.schedule='cosine') needs trainer.max_steps (the length of the decay)")
        return cosine_to_tenth(optimizer, total, o.lr)

    # ------------------------------------------------------------------ validation / test
    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        self._require_net()
        image, target = batch["image"].float(), batch["target"].float()
        refs = batch.get("refs")
        fixed = self.fixer(image, refs)
        bs = image.shape[0]
        m = self.metrics[stage]
        m["psnr"](fixed, target)
        m["ssim"](fixed, target)
        m["psnr_input"](image, target)
        m["ssim_input"](image, target)
        # A random VGG's distances mean nothing (and cost two VGG16 passes per pair): LPIPS only
        # with the real backbone.
        real_lpips = self.hparams.pretrained_backbone
        if real_lpips:
            m["lpips"].update(self.lpips(fixed, target), weight=bs)
            m["lpips_input"].update(self.lpips(image, target), weight=bs)
        logged = {f"{stage}/{k}": v for k, v in m.items() if real_lpips or not k.startswith("lpips")}
        self.log_dict(logged, on_step=False, on_epoch=True, batch_size=bs)
        if batch_idx == 0:
            self._log_grid(f"{stage}/input_fixed_target_ref", image, fixed, target, refs)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """val/psnr, val/ssim, val/lpips (real backbone only) of the fixed output and the *_input baselines; grid."""
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """As validation_step, logged under test/."""
        self._evaluate(batch, batch_idx, "test")

    def _log_grid(self, tag: str, image: Tensor, fixed: Tensor, target: Tensor, refs: Tensor | None) -> None:
        """One row per sample: input | fixed | target | first reference (black if none)."""
        if self.trainer.sanity_checking:
            return
        n = min(self.hparams.num_log_images, image.shape[0])
        ref = torch.zeros_like(image[:n])
        if refs is not None and refs.shape[1] > 0:
            ref = DifixNet.stack_views(image[:n], refs[:n])[:, 1]
        tiles = torch.stack([image[:n], fixed[:n], target[:n], ref], dim=1).flatten(0, 1)
        log_image(self.loggers, tag, tile_grid(list(tiles), columns=4), self.global_step)

    # ------------------------------------------------------------------ predict
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[str]:
        """Fixes a batch of renders and writes `<predict_output_dir>/<name>.png` (atomically).

        Args:
            batch: {"image": (B,3,H,W), optional "refs": (B,K,3,H,W), "name": [str] and
                "orig_size": (B, 2) native (H, W) to write at}.

        Returns:
            the written file paths.
        """
        size = self.hparams.predict_resize_to
        fixer = ReadyFixer.around(self._require_net(), name=self.fixer.name, size=tuple(size) if size else "auto")
        fixed = fixer(batch["image"], batch.get("refs"))
        names = batch.get("name") or [f"{batch_idx:06d}_{i}" for i in range(fixed.shape[0])]
        sizes = batch.get("orig_size")
        out_dir = Path(self.hparams.predict_output_dir)
        written = []
        for i, (img, name) in enumerate(zip(fixed, names)):
            if sizes is not None and tuple(int(s) for s in sizes[i]) != tuple(img.shape[-2:]):
                # back to the render's native size when the datamodule resized it
                size = tuple(int(s) for s in sizes[i])
                img = F.interpolate(img[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
            written.append(str(save_image(img, out_dir / safe_relative_name(name, ".png"))))
        return written

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keeps only the trained tensors (+ rebuild config) in the checkpoint."""
        net = self._require_net()
        checkpoint["state_dict"] = {f"net.{k}": v for k, v in net.trainable_state_dict().items()}
        checkpoint["difix_net_config"] = net.build_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Builds the net if needed and fills the frozen tensors back in, so strict loading works."""
        net = self._require_net()
        saved = checkpoint.get("state_dict", {})
        needed = {f"net.{k}" for k in net.trainable_state_dict()} - {"net.prompt_embeds"}
        missing = sorted(needed - set(saved))
        if missing:
            raise KeyError(
                f"DifixModule checkpoint lacks {len(missing)} trained tensors (e.g. {missing[:3]}); it was saved "
                "with other unet_lora_rank / vae_lora_rank / model settings than this config"
            )
        saved_base = checkpoint.get("difix_net_config", {}).get("base")
        if saved_base is not None and saved_base != net.build_config["base"]:
            rank_zero_warn("DifixModule: the checkpoint was trained on another base model than this config's")
        current = self.state_dict()
        checkpoint["state_dict"] = {**{k: v for k, v in current.items() if k not in saved}, **saved}

    def export_weights(self, path: str | Path) -> Path:
        """Writes the trained weights + build config for `net_from_checkpoint`."""
        return self._require_net().export_weights(path)


def _metric_set() -> torch.nn.ModuleDict:
    return torch.nn.ModuleDict({
        "psnr": PeakSignalNoiseRatio(data_range=1.0),
        "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        "lpips": MeanMetric(),
        "psnr_input": PeakSignalNoiseRatio(data_range=1.0),
        "ssim_input": StructuralSimilarityIndexMeasure(data_range=1.0),
        "lpips_input": MeanMetric(),
    })


def safe_relative_name(name: str, suffix: str) -> Path:
    """`name` as a relative path with `suffix`, refusing absolute paths and '..'."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        rel = Path(Path(name).name or "image")
    return rel.with_name(rel.name + suffix) if rel.suffix.lower() != suffix else rel
