"""A fixer as a config names it: `FixerSpec` (which fixer, and how it runs).

Every caller that names a fixer (ProgressiveFixCallback, the post-render fix, predict videos, the
viewer, scripts/fix_images.py) holds a `ReadyFixer` made from one (`ready.py`); the name is
resolved by `sources.resolve_source`, the one place that tells what a name stands for (its
docstring lists the names). DifixModule's `net.pretrained` takes the same names
(`sources.build_difix_net`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from lightning_modules.difix.fixers.sources import FixerSource

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class FixerSpec:
    """Which fixer, and how it runs. Configs may give a plain name instead (all defaults).

    Args:
        name: a fixer name (`sources.py` lists them).
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

    def build_options(self, source: FixerSource) -> dict[str, Any]:
        """The options of this spec the source's network takes; an option of another kind of
        fixer is an error naming it (what the rest of the spec means, the ReadyFixer applies)."""
        difix = {k: v for k, v in (("latent", self.latent), ("reference_attention", self.reference_attention))
                 if v is not None}
        script = {k: v for k, v in (("value_range", self.value_range), ("operator_libraries", self.operator_libraries))
                  if v is not None}
        if source.kind == "identity":
            return {}
        if source.difix:
            if script:
                raise ValueError(f"fixer {self.name!r}: {' and '.join(script)} are for TorchScript fixers; a Difix net "
                                 "takes [0, 1] renders")
            return difix
        if difix:
            raise ValueError(f"fixer {self.name!r}: {' and '.join(difix)} are Difix options; a {source.kind} runs as it "
                             "is")
        return script


def as_fixer_spec(fixer: str | FixerSpec) -> FixerSpec:
    """A FixerSpec for a plain name (all defaults) or the spec itself."""
    return fixer if isinstance(fixer, FixerSpec) else FixerSpec(name=fixer)
