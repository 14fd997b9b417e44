"""DifixNet: the single-step image fixer (SD-Turbo architecture, diffusers components).

Pipeline per call (the paper's Difix; nv-tlabs/Difix3D `src/model.py`): encode every view with
the frozen VAE encoder (latent mean x scaling factor, no noise added), treat the latents as noisy
latents at timestep `timestep` (199), run the UNet once with the cached prompt embedding and
joint self-attention over the views, take x0 from the DDPM scheduler step, decode with the
skip-connected decoder, clamp.

Image convention at the boundary: float in [0, 1], (B, 3, H, W) or (B, V, 3, H, W); the [-1, 1]
range the VAE wants stays inside this file.

Built by the functions of `lightning_modules/difix/loading/` (`net_from_pretrained`: hub name or
local folder, SD-Turbo or published Difix layout; `net_from_reference_checkpoint`: the reference
code's model_*.pkl; `tiny_net` / `net_from_config`: constructor dicts, fixed seed, offline;
`net_from_checkpoint`: a DifixModule checkpoint or `export_weights` file). Every net carries
`build_config`, a JSON-able dict with what is needed to rebuild it; checkpoints store it next to
the trained weights only.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_modules.difix.net.prompt import DEFAULT_PROMPT
from lightning_modules.difix.net.attention import install_multiview_attention
from lightning_modules.difix.net.sizing import SizePolicy, SizeSpec
from lightning_modules.difix.net.vae_skips import VaeSkips

# pix2pix-turbo's / Difix's LoRA targets. The decoder regex keeps LoRA off the frozen encoder.
VAE_DECODER_LORA_TARGETS = r"decoder\.(.*\.)?(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_q|to_k|to_v|to_out\.0)"
UNET_LORA_TARGETS = [
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
    "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj",
]  # fmt: skip
SIZE_MODES = ("pad", "resize", "reference")
# The DifixNet.__init__ options a build_config records (the rest of build_config is "base" and "prompt").
NET_KEYS = ("timestep", "unet_lora_rank", "vae_lora_rank", "skip_init", "size_mode", "reference_attention", "latent",
            "output")
__all__ = ["DifixNet", "NET_KEYS", "SIZE_MODES"]


class DifixNet(nn.Module):
    """Single-step diffusion fixer with reference views, VAE skips and LoRA.

    Build it with `lightning_modules.difix.loading` (`net_from_pretrained`, `tiny_net`,
    `net_from_config`, `net_from_checkpoint`); `__init__` takes already built diffusers components.

    Args:
        unet: diffusers UNet2DConditionModel (epsilon prediction).
        vae: diffusers AutoencoderKL.
        scheduler: diffusers DDPMScheduler with the model's betas.
        prompt_embeds: (1, L, D) cached text embedding of the prompt.
        timestep: the single denoising timestep (199 = noise level 200 in the paper).
        unet_lora_rank: 0 trains the whole UNet (paper); r > 0 trains a rank-r LoRA instead
            (fits 24 GB cards).
        vae_lora_rank: rank of the VAE decoder LoRA (4 in the paper); 0 leaves the decoder frozen.
        skip_init: constant initial weight of the VAE skip convs.
        size_mode: the size policy these weights want by default (`size_policy("auto")`; the
            policy is applied by whoever runs the net, `ReadyFixer` or `DifixModule`): "pad"
            (reflect) or "resize" (bilinear) to a multiple of the model's factor (VAE x UNet, 64
            for SD); "reference": as the reference `DifixPipeline`, Lanczos to the size rounded
            down to a multiple of the VAE factor (8) and back, the UNet taking latents of any
            size as diffusers' UNet does.
        reference_attention: joint self-attention over views (False: views are independent).
        latent: "mode" of the VAE posterior (default, deterministic) or a "sample" from it (the
            reference code; draws from the global RNG).
        output: "decode" (the paper): the fixed image is the decoder's output. "residual" (not in
            the paper; for small models): input + decode(denoised latent) - decode(input latent),
            both decodes with the same skips, so the image changes only by what the UNet step
            changes in the latent and the decoder's reconstruction error cancels. A 2M-parameter
            offline prior reconstructs clean images at ~31-34 dB; on renders at ~18 dB that error
            alone cost the decode output 0.2 dB (measured), more than the UNet step gained. Costs
            a second decode (batched with the first).
        gradient_checkpointing: trade compute for memory in the UNet.
        build_config: how to rebuild the base model (set by the classmethods).
        provenance: what the builder found, for `describe()` only (not saved): "layout", why
            reference attention is on or off ("reference_attention"), "licence".
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        scheduler: Any,
        prompt_embeds: Tensor,
        timestep: int = 199,
        unet_lora_rank: int = 0,
        vae_lora_rank: int = 4,
        skip_init: float = 1e-5,
        size_mode: Literal["pad", "resize", "reference"] = "pad",
        reference_attention: bool = True,
        latent: Literal["mode", "sample"] = "mode",
        output: Literal["decode", "residual"] = "decode",
        gradient_checkpointing: bool = False,
        build_config: dict[str, Any] | None = None,
        provenance: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if size_mode not in SIZE_MODES:
            raise ValueError(f"DifixNet: size_mode must be one of {SIZE_MODES}, got {size_mode!r}")
        if latent not in ("mode", "sample"):
            raise ValueError(f"DifixNet: latent must be 'mode' or 'sample', got {latent!r}")
        if output not in ("decode", "residual"):
            raise ValueError(f"DifixNet: output must be 'decode' or 'residual', got {output!r}")
        self.latent = latent
        self.output = output
        n_train = scheduler.config.num_train_timesteps
        if not 0 <= timestep < n_train:
            raise ValueError(f"DifixNet: timestep {timestep} outside [0, {n_train})")
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1:
            raise ValueError(f"DifixNet: prompt_embeds must be (1, L, D), got {tuple(prompt_embeds.shape)}")
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.timestep = int(timestep)
        # PITFALLS: set_timesteps(1) would put the step at t=0; custom timesteps make the single
        # step end at "t=-1", so the step's output is x0.
        self.scheduler.set_timesteps(timesteps=[self.timestep])
        self.size_mode = size_mode
        self.reference_attention = reference_attention
        self.register_buffer("prompt_embeds", prompt_embeds.detach().clone().float())
        with torch.random.fork_rng(devices=[]):  # nn.Conv2d's default init draws from the RNG
            self.skips = VaeSkips(vae.config.block_out_channels, init_value=skip_init)
        self.skips.attach(vae)
        if reference_attention:
            install_multiview_attention(unet)

        from peft import LoraConfig

        # LoRA A matrices are drawn from a fixed seed (the base seed when known), so the same
        # build config gives the same starting point and the global RNG stream is not consumed.
        seed = int(((build_config or {}).get("base") or {}).get("seed", 0))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if vae_lora_rank > 0:
                # peft's default alpha (8) and gaussian init as in the reference code: B starts
                # at 0, so the adapters change nothing until trained.
                vae.add_adapter(LoraConfig(r=vae_lora_rank, init_lora_weights="gaussian",
                                           target_modules=VAE_DECODER_LORA_TARGETS))
            if unet_lora_rank > 0:
                unet.add_adapter(LoraConfig(r=unet_lora_rank, init_lora_weights="gaussian",
                                            target_modules=UNET_LORA_TARGETS))
        # add_adapter changes requires_grad flags: set the trainable set explicitly afterwards.
        self.requires_grad_(False)
        for name, p in vae.named_parameters():
            p.requires_grad_(name.startswith("decoder.") and "lora_" in name)
        for name, p in unet.named_parameters():
            p.requires_grad_(unet_lora_rank == 0 or "lora_" in name)
        self.skips.requires_grad_(True)
        if gradient_checkpointing:
            # UNet only, as the reference code. The decoder's skip hooks read state that is gone
            # when a checkpointed up block is recomputed during backward.
            unet.enable_gradient_checkpointing()

        vae_down = 2 ** (len(vae.config.block_out_channels) - 1)
        unet_down = 2 ** (len(unet.config.block_out_channels) - 1)
        self.vae_factor = vae_down
        self.size_multiple = vae_down * unet_down
        self.provenance: dict[str, str] = dict(provenance or {})
        given = copy.deepcopy(build_config or {})
        self.build_config: dict[str, Any] = {
            "base": given.get("base", {"kind": "unknown"}),
            "prompt": given.get("prompt", DEFAULT_PROMPT),
            "timestep": self.timestep,
            "unet_lora_rank": int(unet_lora_rank),
            "vae_lora_rank": int(vae_lora_rank),
            "skip_init": float(skip_init),
            "size_mode": size_mode,
            "reference_attention": bool(reference_attention),
            "latent": latent,
            "output": output,
        }

    # ------------------------------------------------------------------ weights
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The trained tensors (UNet or UNet-LoRA, decoder LoRA, skip convs) and the prompt embedding."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in trainable or k == "prompt_embeds"}

    def load_trainable_state_dict(self, state_dict: dict[str, Tensor], source: str = "state_dict") -> None:
        """Loads what `trainable_state_dict` returned; every trained tensor must be present.

        Raises:
            KeyError: naming `source` and the missing / unexpected keys.
        """
        expected = set(self.trainable_state_dict())
        given = set(state_dict)
        missing = sorted(expected - given - {"prompt_embeds"})
        unexpected = sorted(given - expected)
        if missing or unexpected:
            raise KeyError(
                f"{source}: trained weights do not match this DifixNet (missing {len(missing)}: {missing[:5]}, "
                f"unexpected {len(unexpected)}: {unexpected[:5]}); was it saved with other "
                "unet_lora_rank / vae_lora_rank / base model?"
            )
        self.load_state_dict(state_dict, strict=False)

    def export_weights(self, path: str | Path) -> Path:
        """Writes the trained weights + build_config (safetensors if the suffix says so, else torch.save).

        Atomic: written to a temporary file, then renamed.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.trainable_state_dict().items()}
        tmp = path.with_name(f".{path.name}.tmp")
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata={"difix_net_config": json.dumps(self.build_config)})
        else:
            torch.save({"difix_net_config": self.build_config, "state_dict": tensors}, tmp)
        os.replace(tmp, path)
        return path

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with requires_grad (what the optimizer gets)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ the fixer contract
    value_range = (0.0, 1.0)  # what forward takes and returns (FixerNet)

    @property
    def uses_references(self) -> bool:
        """Whether reference views change the output (only through reference attention)."""
        return self.reference_attention

    def size_policy(self, size: SizeSpec = "auto") -> SizePolicy:
        """The policy renders of any size reach this net with: "auto" (this net's `size_mode`),
        "reference", "pad", "resize", or (height, width) with Lanczos (the reference's 576 x 1024)."""
        if isinstance(size, (tuple, list)):
            return SizePolicy("fixed", multiple=self.vae_factor, size=(int(size[0]), int(size[1])), filter="lanczos")
        mode = self.size_mode if size == "auto" else size
        if mode not in SIZE_MODES:
            raise ValueError(f"DifixNet: size must be auto, {', '.join(SIZE_MODES)} or [height, width], got {size!r}")
        return SizePolicy(mode, multiple=self.vae_factor if mode == "reference" else self.size_multiple)

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """Fixes images given optional reference views, at a size the net runs at.

        Args:
            images: (B, 3, H, W) in [0, 1] renders to fix, or (B, V, 3, H, W) with the
                references already stacked after the render (then `refs` must be None); H and
                W multiples of `vae_factor` (a `SizePolicy` brings any size there).
            refs: (B, K, 3, H, W) in [0, 1], K >= 0.

        Returns:
            (B, 3, H, W) fixed images, the decoder's output mapped to [0, 1] but not clamped:
            whoever runs the net checks the raw output (finite) before it clamps, as the reference
            pipeline clamps (`ReadyFixer`). `forward_views` clamps.
        """
        views = self.stack_views(images, refs)
        return self.forward_views(views, all_views=False, clamp=False)[:, 0]

    @staticmethod
    def stack_views(images: Tensor, refs: Tensor | None = None) -> Tensor:
        """Stacks render and references (of the render's size) into (B, 1 + K, 3, H, W)."""
        if images.ndim == 5:
            if refs is not None:
                raise ValueError("DifixNet: pass refs separately only with (B, 3, H, W) images")
            return images
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"DifixNet: images must be (B, 3, H, W), got {tuple(images.shape)}")
        if refs is None or refs.shape[1] == 0:
            return images[:, None]
        if refs.ndim != 5 or refs.shape[0] != images.shape[0] or refs.shape[2] != 3:
            raise ValueError(f"DifixNet: refs must be (B={images.shape[0]}, K, 3, H, W), got {tuple(refs.shape)}")
        if refs.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"DifixNet: references of {tuple(refs.shape[-2:])} for renders of {tuple(images.shape[-2:])}; "
                             "bring both to the size the net runs at with one SizePolicy (a ReadyFixer does)")
        return torch.cat([images[:, None], refs.to(images.dtype)], dim=1)

    def forward_views(self, views: Tensor, all_views: bool = True, clamp: bool = True) -> Tensor:
        """Runs the fixer on stacked views.

        Args:
            views: (B, V, 3, H, W) in [0, 1]; view 0 is the render, views 1.. the references;
                H and W multiples of `vae_factor`.
            all_views: also decode the reference slots (for the reference-slot losses);
                False decodes view 0 only.
            clamp: clamp the output to [0, 1], as the reference pipeline (False: the raw output
                mapped to [0, 1], for a caller that checks it first).

        Returns:
            (B, V, 3, H, W) if all_views else (B, 1, 3, H, W), in [0, 1].
        """
        if views.ndim != 5 or views.shape[2] != 3:
            raise ValueError(f"DifixNet: views must be (B, V, 3, H, W), got {tuple(views.shape)}")
        b, v, _, h, w = views.shape
        if h % self.vae_factor or w % self.vae_factor:
            raise ValueError(f"DifixNet: {h}x{w} is not a multiple of {self.vae_factor}; run the net through its "
                             "SizePolicy (`size_policy()`, as a ReadyFixer and DifixModule do)")
        x = views.flatten(0, 1) * 2 - 1
        vae_dtype = next(self.vae.parameters()).dtype
        unet_dtype = next(self.unet.parameters()).dtype
        encoder_frozen = not any(p.requires_grad for p in self.vae.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not encoder_frozen), self.skips.capture() as acts:
            dist = self.vae.encode(x.to(vae_dtype)).latent_dist
            latents = (dist.sample() if self.latent == "sample" else dist.mode()) * self.vae.config.scaling_factor
        timesteps = torch.full((b * v,), self.timestep, device=latents.device, dtype=torch.long)
        cond = self.prompt_embeds.expand(b * v, -1, -1).to(unet_dtype)
        extra = {"cross_attention_kwargs": {"num_views": v}} if self.reference_attention else {}
        eps = self.unet(latents.to(unet_dtype), timesteps, encoder_hidden_states=cond, **extra).sample
        # The step's own noise is multiplied by ~0 at the last step; a local generator keeps it
        # from consuming the global RNG stream. The step itself in float32 (a no-op when the
        # UNet is float32), as diffusers keeps scheduler arithmetic out of half precision.
        gen = torch.Generator(device=latents.device).manual_seed(0)
        x0 = self.scheduler.step(eps.float(), self.timestep, latents.float(), generator=gen).pred_original_sample
        acts = list(acts)
        if not all_views:
            x, x0, latents = (t.unflatten(0, (b, v))[:, 0] for t in (x, x0, latents))
            acts = [a.unflatten(0, (b, v))[:, 0] for a in acts]
        if self.output == "residual":  # one decoder call for [denoised, input] latents
            n = len(x0)
            x0 = torch.cat([x0, latents])
            acts = [torch.cat([a, a]) for a in acts]
        with self.skips.inject(acts):
            out = self.vae.decode(x0.to(vae_dtype) / self.vae.config.scaling_factor).sample.float()
        if self.output == "residual":
            out = x.float() + out[:n] - out[n:]
        out = (out.clamp(-1, 1) if clamp else out) + 1
        return (out / 2).unflatten(0, (b, -1))

    # ------------------------------------------------------------------ inference set-up
    def to_dtype(self, dtype: torch.dtype) -> DifixNet:
        """Casts the weights for inference as diffusers' `torch_dtype` does.

        The UNet and the VAE (with its skip convs) go to `dtype`; a float16 VAE whose config
        sets `force_upcast` (the SD VAEs, which overflow in float16) stays float32, as diffusers
        pipelines upcast it. The prompt embedding stays float32 and is cast at use.
        """
        self.unet.to(dtype)
        upcast = dtype == torch.float16 and bool(getattr(self.vae.config, "force_upcast", False))
        vae_dtype = torch.float32 if upcast else dtype
        self.vae.to(vae_dtype)
        self.skips.to(vae_dtype)
        return self

    def describe(self) -> str:
        """One line of what this fixer is and how it runs (what the loaders log)."""
        c, p = self.build_config, self.provenance
        unet_dtype = str(next(self.unet.parameters()).dtype).replace("torch.", "")
        vae_dtype = str(next(self.vae.parameters()).dtype).replace("torch.", "")
        why = f" ({p['reference_attention']})" if p.get("reference_attention") else ""
        lora = f"UNet LoRA rank {c['unet_lora_rank']}" if c["unet_lora_rank"] else "full UNet"
        parts = [
            f"layout: {p.get('layout', c['base'].get('kind', 'unknown'))}",
            f"reference attention: {'on' if self.reference_attention else 'off'}{why}",
            f"{lora}, decoder LoRA rank {c['vae_lora_rank']}",
            f"latent: {self.latent}", f"output: {self.output}", f"timestep: {self.timestep}",
            f"dtype: {unet_dtype}" + (f" (VAE {vae_dtype})" if vae_dtype != unet_dtype else ""),
        ]
        if p.get("licence"):
            parts.append(f"licence: {p['licence']}")
        return " | ".join(parts)
