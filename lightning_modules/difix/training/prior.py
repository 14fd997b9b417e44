"""DifixPriorModule: pretrains DifixNet's VAE and UNet offline, playing SD-Turbo's role on CPU.

Difix fine-tunes SD-Turbo, a model that already (a) encodes and decodes images with its VAE and
(b) denoises latents in one step. Offline there is no SD-Turbo, and a random tiny model asked to
learn both plus the fix in a few hundred steps damages clean content. This module learns (a) and
(b) on a clean image corpus (`datamodules.pairs.prior_corpus`), with the very components DifixNet uses
(diffusers AutoencoderKL + UNet2DConditionModel + DDPM scheduler from `net/architectures.py`):

- VAE: an autoencoder with L2 + a small KL term (SD's VAE objective without its GAN/LPIPS parts,
  which need pretrained networks we do not have; the posterior mean is decoded by default). Half of each batch is decoded through the
  Difix skip connections (`vae_skips.py`), half without, so the decoder works both from the
  bottleneck alone and with the encoder's full-resolution features, which the fixer uses to keep
  clean content.
- UNet: epsilon prediction on VAE latents noised at the fixer's timestep (199) and, for the
  rest of the batch, at uniform timesteps (a denoiser that has seen every noise level is
  smoother around t=199), conditioned on the cached prompt embedding.

The checkpoint is a normal Lightning checkpoint whose `state_dict` holds DifixNet-named tensors
(`vae.*`, `unet.*`, `skips.*`, `prompt_embeds`) and whose `difix_prior` entry says how to rebuild
the architecture; `DifixModule(pretrained=<that .ckpt>)` starts from it (`loading/from_prior.py`).
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio

from lightning_modules.difix.net.prompt import DEFAULT_PROMPT
from lightning_modules.difix.loading.base_models import net_from_config
from lightning_modules.difix.loading.from_prior import PRIOR_KEY
from lightning_modules.difix.net.architectures import CONFIGS
from lightning_modules.difix.net.net import DifixNet
from lightning_modules.difix.training.schedules import cosine_to_tenth


class DifixPriorModule(pl.LightningModule):
    """Trains a DifixNet's VAE (autoencoder, with and without skips) and UNet (denoiser) from scratch.

    Batches: {"image": (B, 3, H, W) in [0, 1]} (PriorCorpusDataModule), H and W multiples of the
    VAE factor.

    Args:
        config: architecture name in `architectures.CONFIGS` ("tiny", "small", ...).
        seed: initial-weight seed (also seeds the random text encoder's prompt embedding).
        prompt: prompt whose embedding conditions the UNet (the fixer keeps this embedding).
        timestep: the fixer's timestep; `fixed_timestep_fraction` of each batch is noised there.
        fixed_timestep_fraction: share of the denoising batch at `timestep` (rest uniform).
        skip_fraction: share of each batch decoded through the skip connections.
        kl_weight: weight of the VAE's KL term (keeps latents near unit scale for the UNet).
        skip_default_init: start the skip convs at PyTorch's default init instead of the
            fixer's near-zero constant: a decoder trained from scratch then learns to use the
            full-resolution features from step 1 (at 1e-5 they were still nearly unused after
            200 steps: held-out PSNR with skips 14.1 dB vs 13.7 without).
        sample_latents: decode a posterior sample (SD's VAE training) instead of its mean; the
            fixer encodes with the mean, and from scratch the sampling noise (std 1 at init)
            slowed early learning (train MSE 0.21 vs 0.16 after 60 steps, one run).
        w_denoise: weight of the UNet's epsilon loss.
        lr: AdamW learning rate (cosine decay to 10% over the run's max_steps).
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        config: str = "tiny",
        seed: int = 0,
        prompt: str = DEFAULT_PROMPT,
        timestep: int = 199,
        fixed_timestep_fraction: float = 0.5,
        skip_fraction: float = 0.5,
        kl_weight: float = 1e-4,
        skip_default_init: bool = True,
        sample_latents: bool = False,
        w_denoise: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if config not in CONFIGS or CONFIGS[config].get("text_encoder") is None:
            raise ValueError(f"DifixPriorModule.config: {config!r} is not a known offline config "
                             f"({sorted(k for k, v in CONFIGS.items() if v.get('text_encoder') is not None)})")
        for name, value in (("fixed_timestep_fraction", fixed_timestep_fraction), ("skip_fraction", skip_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"DifixPriorModule.{name} must be in [0, 1], got {value}")
        self.save_hyperparameters()
        self.net: DifixNet | None = None
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.val_psnr_skips = PeakSignalNoiseRatio(data_range=1.0)
        self.val_denoise = MeanMetric()

    def configure_model(self) -> None:
        """Builds the net (plain: no LoRA, no reference attention) with every weight trainable."""
        if self.net is not None:
            return
        h = self.hparams
        self.net = net_from_config(h.config, seed=h.seed, prompt=h.prompt, timestep=h.timestep,
                                   unet_lora_rank=0, vae_lora_rank=0, reference_attention=False)
        self.net.requires_grad_(True)
        if h.skip_default_init:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(h.seed)
                for conv in self.net.skips.convs:
                    conv.reset_parameters()
        self.net.prompt_embeds.requires_grad_(False)

    def _net(self) -> DifixNet:
        if self.net is None:
            self.configure_model()
        assert self.net is not None
        return self.net

    # ------------------------------------------------------------------ model passes
    def autoencode(self, image: Tensor, skip_fraction: float, sample: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Encodes and decodes `image`; the first round(B * skip_fraction) items use the skips.

        Returns:
            recon (B, 3, H, W) in [-1, 1] (unclamped), latent mode (B, 4, h, w) unscaled,
            KL per item (B,).
        """
        net = self._net()
        x = image * 2 - 1
        with net.skips.capture() as acts:
            posterior = net.vae.encode(x).latent_dist
        z = posterior.sample() if sample else posterior.mode()
        n_skip = round(x.shape[0] * skip_fraction)
        parts = []
        if n_skip:
            with net.skips.inject([a[:n_skip] for a in acts]):
                parts.append(net.vae.decode(z[:n_skip]).sample)
        if n_skip < x.shape[0]:
            parts.append(net.vae.decode(z[n_skip:]).sample)
        return torch.cat(parts), posterior.mode(), posterior.kl()

    def denoise_loss(self, latents: Tensor) -> Tensor:
        """Epsilon-prediction MSE on scaled latents (B, 4, h, w) noised per the DDPM schedule."""
        net, h = self._net(), self.hparams
        z0 = latents.detach() * net.vae.config.scaling_factor
        b = z0.shape[0]
        n_train = net.scheduler.config.num_train_timesteps
        t = torch.randint(0, n_train, (b,), device=z0.device)
        fixed = torch.arange(b, device=z0.device) < round(b * h.fixed_timestep_fraction)
        t = torch.where(fixed, torch.full_like(t, h.timestep), t)
        eps = torch.randn_like(z0)
        noisy = net.scheduler.add_noise(z0, eps, t)
        pred = net.unet(noisy, t, encoder_hidden_states=net.prompt_embeds.expand(b, -1, -1)).sample
        return F.mse_loss(pred, eps)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        h = self.hparams
        image = batch["image"]
        recon, mode, kl = self.autoencode(image, h.skip_fraction, sample=h.sample_latents)
        loss_rec = F.mse_loss(recon, image * 2 - 1)
        loss_kl = kl.mean() / image[0].numel()  # per pixel, comparable with the per-pixel MSE
        loss_den = self.denoise_loss(mode)
        loss = loss_rec + h.kl_weight * loss_kl + h.w_denoise * loss_den
        bs = image.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({"train/loss_rec": loss_rec.detach(), "train/loss_kl": loss_kl.detach(),
                       "train/loss_denoise": loss_den.detach()}, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """val/psnr_recon (bottleneck only), val/psnr_recon_skips, val/denoise_mse on held-out images."""
        image = batch["image"]
        recon, mode, _ = self.autoencode(image, 0.0, sample=False)
        recon_skips, _, _ = self.autoencode(image, 1.0, sample=False)
        self.val_psnr((recon.clamp(-1, 1) + 1) / 2, image)
        self.val_psnr_skips((recon_skips.clamp(-1, 1) + 1) / 2, image)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(batch_idx)  # the same noise every validation: comparable curves
        self.val_denoise.update(self.denoise_loss(mode), weight=image.shape[0])
        torch.random.set_rng_state(gen_state)
        self.log_dict({"val/psnr_recon": self.val_psnr, "val/psnr_recon_skips": self.val_psnr_skips,
                       "val/denoise_mse": self.val_denoise}, on_step=False, on_epoch=True, batch_size=image.shape[0])

    def configure_optimizers(self) -> Any:
        h = self.hparams
        params = [p for p in self._net().parameters() if p.requires_grad]
        # fused: one kernel for all ~400 small tensors instead of a Python loop over them
        # (about 20 ms of a 0.3 s CPU step for the tiny net).
        optimizer = torch.optim.AdamW(params, lr=h.lr, weight_decay=h.weight_decay, fused=True)
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else None
        if total is None:
            return optimizer
        return cosine_to_tenth(optimizer, total, h.lr)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Stores DifixNet-named tensors and how to rebuild the architecture."""
        net = self._net()
        checkpoint["state_dict"] = {f"net.{k}": v for k, v in net.state_dict().items()}
        checkpoint[PRIOR_KEY] = {"config": net.build_config["base"]["config"], "seed": int(self.hparams.seed),
                                 "prompt": self.hparams.prompt, "timestep": int(self.hparams.timestep)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._net()  # resume: the net must exist before Lightning loads the state dict
