"""A fixer as a config names it, and the one place that turns that name into a network.

Every caller that names a fixer (DifixModule's `pretrained`, ProgressiveFixCallback, the
post-render fix, predict videos, the viewer, scripts/fix_images.py) goes through
`build_difix_net` (a name -> DifixNet) or `load_fixer` (a `FixerSpec` -> a ready image fixer),
and checks names early with `check_fixer`. Names:

- "nvidia/difix_ref", "nvidia/difix" (published, from the Hugging Face cache or downloaded), or a
  local folder of either; "stabilityai/sd-turbo" or its folder (an untrained Difix);
- a reference training checkpoint `model_*.pkl` (its base: stabilityai/sd-turbo);
- a DifixModule checkpoint (`.ckpt`), exported weights (`.safetensors`, `.pt`, `.pth`), or an
  offline prior checkpoint (`configs/demo/prior.yaml`, `.ckpt`);
- "tiny" or "tiny:SEED": an untrained tiny DifixNet, for tests of the plumbing;
- a TorchScript image-to-image fixer: "nvidia/Fixer" (NVIDIA's successor to Difix, its exported
  `pretrained/pretrained_fixer_jit.pt` from the Hugging Face cache), a local folder of that repo,
  or any TorchScript `.pt` file (`torchscript.py`: no reference view, runs as it is);
- "identity": no fixer (renders pass through), the ablation control of the progressive schedule.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

from lightning_modules.difix.fixers.names import IDENTITY, REFERENCE_SUFFIX, TINY, WEIGHT_SUFFIXES
from lightning_modules.difix.loading.published import REFERENCE_BASE

if TYPE_CHECKING:
    from lightning_modules.difix.net.net import DifixNet

log = logging.getLogger("difix3d.fixer")

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class FixerSpec:
    """Which fixer, and how it runs. Configs may give a plain name instead (all defaults).

    Args:
        name: see the module docstring.
        size: how renders reach the net. "auto": the reference pipeline's pre-processing for
            NVIDIA's published models and reference pkls ("reference"), the net's own otherwise;
            "reference": Lanczos to the size rounded down to a multiple of 8 and back, as
            `DifixPipeline`; "pad" / "resize": to a multiple of the model's factor (64 for SD);
            [height, width]: Lanczos to that size and back, as the reference `inference_difix.py`
            (576 x 1024).
        dtype: weights' dtype for inference. "auto": bfloat16 on CUDA, float32 on the CPU; a
            float16 SD VAE stays float32 (`force_upcast`), as diffusers does.
        device: where the fixer runs ("cuda:1", "cpu"); None: where the renders are.
        latent: "mode" of the VAE posterior (deterministic) or a "sample" (the reference
            pipeline); None: the net's own ("mode" unless a checkpoint says otherwise).
        reference_attention: joint attention over render and references; None: what the
            weights are (on for `nvidia/difix_ref`, off for `nvidia/difix`).
        value_range: TorchScript fixers: [low, high] the model takes and returns; None: [-1, 1]
            (nvidia/Fixer's). Difix nets take [0, 1] renders and normalise themselves.
        operator_libraries: TorchScript fixers: Python modules to import before loading, that
            register operators its graph calls; None: the known ones (nvidia/Fixer:
            transformer_engine).

    For a TorchScript fixer, `size` is "auto" (nvidia/Fixer's default 576 x 1024) or [height,
    width], and `dtype` "auto" is bfloat16 on CUDA as the Fixer's script runs it.
    """

    name: str = "nvidia/difix_ref"
    size: Literal["auto", "reference", "pad", "resize"] | tuple[int, int] = "auto"
    dtype: Dtype = "auto"
    device: str | None = None
    latent: Literal["mode", "sample"] | None = None
    reference_attention: bool | None = None
    value_range: tuple[float, float] | None = None
    operator_libraries: list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"fixer name must be a non-empty string, got {self.name!r}")
        if isinstance(self.size, (list, tuple)):
            if len(self.size) != 2 or min(int(s) for s in self.size) <= 0:
                raise ValueError(f"fixer {self.name!r}: size must be [height, width] > 0, got {self.size}")
            self.size = (int(self.size[0]), int(self.size[1]))
        elif self.size not in ("auto", "reference", "pad", "resize"):
            raise ValueError(f"fixer {self.name!r}: size must be auto, reference, pad, resize or [h, w], got {self.size!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"fixer {self.name!r}: dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.latent not in (None, "mode", "sample"):
            raise ValueError(f"fixer {self.name!r}: latent must be mode or sample, got {self.latent!r}")
        if self.value_range is not None:
            if len(self.value_range) != 2 or not float(self.value_range[0]) < float(self.value_range[1]):
                raise ValueError(f"fixer {self.name!r}: value_range must be [low, high], low < high, got {self.value_range}")
            self.value_range = (float(self.value_range[0]), float(self.value_range[1]))

    def net_options(self) -> dict[str, Any]:
        """The DifixNet options this spec sets (the rest follow the weights)."""
        out: dict[str, Any] = {}
        if isinstance(self.size, str) and self.size != "auto":
            out["size_mode"] = self.size
        if self.latent is not None:
            out["latent"] = self.latent
        if self.reference_attention is not None:
            out["reference_attention"] = self.reference_attention
        return out


def as_fixer_spec(fixer: str | FixerSpec) -> FixerSpec:
    """A FixerSpec for a plain name (all defaults) or the spec itself."""
    return fixer if isinstance(fixer, FixerSpec) else FixerSpec(name=fixer)


def fixer_name(fixer: str | FixerSpec) -> str:
    return fixer.name if isinstance(fixer, FixerSpec) else str(fixer)


def build_difix_net(name: str, cache_dir: str | None = None, prompt: str | None = None,
                    **net_options: Any) -> DifixNet:
    """The DifixNet a fixer name stands for (see the module docstring); no wrapping, no casting.

    Args:
        name: a fixer name other than "identity".
        cache_dir: Hugging Face cache folder.
        prompt: text prompt for a model with a text encoder (hub / folder / pkl / tiny); None:
            the default ("remove degradation"). Checkpoints and priors keep their stored
            embedding, so another prompt for them is an error.
        **net_options: DifixNet options (timestep, LoRA ranks, size_mode, latent, ...). For a
            checkpoint they replace the stored ones; LoRA ranks must then equal the stored ones.

    Raises:
        FileNotFoundError / ValueError naming the file; PretrainedNotFoundError for a hub id
        that is not cached (offline), with what to download where.
    """
    # Imported here: naming or checking a fixer (config parsing) must not pull in diffusers.
    from lightning_modules.difix.loading.base_models import tiny_net
    from lightning_modules.difix.loading.builders import net_from_checkpoint, net_from_pretrained
    from lightning_modules.difix.loading.from_prior import is_prior_checkpoint, net_from_prior
    from lightning_modules.difix.loading.published import net_from_reference_checkpoint

    from lightning_modules.difix.fixers.torchscript import is_torchscript_name

    if name == IDENTITY:
        raise ValueError("fixer 'identity' is no network (load_fixer returns the pass-through fixer for it)")
    if is_torchscript_name(name):
        raise ValueError(f"fixer {name!r} is a TorchScript fixer: it runs as it is (a fixer: of the scene callback, "
                         "the viewer, fix_images.py) but is not a Difix network to train or fine-tune")
    text = {"prompt": prompt} if prompt is not None else {}
    if TINY.match(name):
        return tiny_net(seed=int(name.split(":", 1)[1]) if ":" in name else 0, **text, **net_options)
    path = Path(name).expanduser()
    if path.suffix == REFERENCE_SUFFIX:
        return net_from_reference_checkpoint(path, base=REFERENCE_BASE, cache_dir=cache_dir, **text, **net_options)
    if path.suffix in WEIGHT_SUFFIXES:
        if is_prior_checkpoint(path):  # the offline prior in SD-Turbo's place
            net = net_from_prior(path, **net_options)
        else:
            gradient_checkpointing = bool(net_options.pop("gradient_checkpointing", False))
            net_options.pop("skip_init", None)  # the checkpoint holds the trained skip convs
            net = net_from_checkpoint(path, cache_dir=cache_dir, gradient_checkpointing=gradient_checkpointing,
                                      **net_options)
        if prompt is not None and prompt != net.build_config["prompt"]:
            raise ValueError(f"fixer {name}: its prompt embedding is for {net.build_config['prompt']!r}; "
                             f"prompt {prompt!r} cannot be used with it (leave the prompt at its default)")
        return net
    return net_from_pretrained(str(path) if path.is_dir() else name, cache_dir=cache_dir, **text, **net_options)


def load_fixer(fixer: str | FixerSpec) -> nn.Module:
    """The ready image fixer a spec names: (B, 3, H, W) renders + references in, same size out.

    The net loads now; it moves to its device and dtype at its first call, when it logs one
    line of what it is (`ImageFixer.describe`).
    """
    from lightning_modules.difix.fixers.image_fixer import IdentityFixer, ImageFixer

    spec = as_fixer_spec(fixer)
    check_fixer(spec)
    if spec.name == IDENTITY:
        return IdentityFixer()
    from lightning_modules.difix.fixers import torchscript

    if torchscript.is_torchscript_name(spec.name):
        return _torchscript_fixer(spec)
    if spec.value_range is not None or spec.operator_libraries is not None:
        raise ValueError(f"fixer {spec.name!r}: value_range and operator_libraries are for TorchScript fixers; a "
                         "Difix net takes [0, 1] renders")
    net = build_difix_net(spec.name, **spec.net_options())
    resize_to = spec.size if isinstance(spec.size, tuple) else None
    return ImageFixer(net, name=spec.name, resize_to=resize_to, dtype=spec.dtype, device=spec.device)


def _torchscript_fixer(spec: FixerSpec) -> nn.Module:
    from lightning_modules.difix.fixers import torchscript

    if isinstance(spec.size, str) and spec.size != "auto":
        raise ValueError(f"fixer {spec.name!r}: a TorchScript fixer runs at a fixed size: size is auto "
                         f"({torchscript.DEFAULT_SIZE[0]} x {torchscript.DEFAULT_SIZE[1]}) or [height, width], not "
                         f"{spec.size!r}")
    if spec.latent is not None or spec.reference_attention is not None:
        raise ValueError(f"fixer {spec.name!r}: latent and reference_attention are Difix options; a TorchScript "
                         "fixer runs as it is")
    size = spec.size if isinstance(spec.size, tuple) else torchscript.DEFAULT_SIZE
    return torchscript.TorchScriptFixer(
        torchscript.torchscript_path(spec.name), name=spec.name, size=size, dtype=spec.dtype, device=spec.device,
        value_range=spec.value_range or torchscript.DEFAULT_RANGE, operator_libraries=spec.operator_libraries)


def check_fixer(fixer: str | FixerSpec) -> None:
    """Checks, without loading any weights, that `load_fixer(fixer)` can find its fixer.

    Cheap enough for `on_fit_start`: a typo must fail before step 1, not when the first fix is
    due (step 30,000 in the paper config). Accepts a weights file / `.pkl` that exists, a model
    folder, a hub id that is cached or may be downloaded (HF_HUB_OFFLINE off), "tiny[:SEED]",
    "identity".

    Raises:
        FileNotFoundError: a weights file or local folder that does not exist or is not a model.
        ValueError: a malformed "tiny:SEED", or a hub id that is neither cached nor downloadable
            because the hub is switched off (HF_HUB_OFFLINE=1); the message says what to download.
    """
    from lightning_modules.difix.fixers.checks import check_fixer_name
    from lightning_modules.difix.fixers.torchscript import check_torchscript, is_torchscript_name

    name = fixer_name(fixer)
    if is_torchscript_name(name):
        check_torchscript(name, fixer.operator_libraries if isinstance(fixer, FixerSpec) else None)
        return
    check_fixer_name(name)
