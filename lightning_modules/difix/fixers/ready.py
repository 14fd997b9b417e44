"""The one ready fixer every caller holds: `ReadyFixer`.

Made from a `FixerSpec` (or around an already built net), it resolves the name once
(`sources.resolve_source`) and checks it cheaply (`check`, before step 1), loads the network at its
first use (eval mode, no gradients, the spec's device and dtype; one load line), owns the size
policy (`SizePolicy`, applied once to renders and references alike), the choice of references
(the nearest training views, `fix_views`) and batching, and checks every raw output before it is
clamped (floating point, one image per input, finite). A failure names the fixer (`FixerError`).

The progressive fix (Difix3D), the post-render fix (Difix3D+), the viewer, scripts/fix_images.py
and DifixModule's predict each hold one; the viewer beside training is handed the progressive
fix's, so one network is in memory.

The networks it runs follow one contract (DifixNet, IdentityNet, TorchScriptNet):
`forward(images (B, 3, H, W), refs (B, K, 3, H, W) | None) -> (B, 3, H, W)`, raw, in the net's
`value_range` at a size its `size_policy(size)` gives; `uses_references`, `describe()`,
`to_dtype(dtype)`.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from datamodules.cameras.cameras import Cameras
from datamodules.cameras.poses import nearest_views
from lightning_modules.difix.fixers.errors import FixerError, FixerOutputError, check_finite
from lightning_modules.difix.fixers.sources import FixerSource, resolve_source
from lightning_modules.difix.fixers.spec import FixerSpec, as_fixer_spec
from lightning_modules.difix.net.sizing import SizePolicy, SizeSpec

log = logging.getLogger("difix3d.fixer")

__all__ = ["ReadyFixer", "ReferenceViews", "resolve_dtype"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto": bfloat16 on CUDA (float16 where bfloat16 is missing), float32 elsewhere."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class ReferenceViews:
    """The clean views references are chosen from: M cameras and their (3, h, w) images in [0, 1]."""

    cameras: Cameras
    images: list[Tensor]

    def __post_init__(self) -> None:
        if len(self.cameras) != len(self.images):
            raise ValueError(f"ReferenceViews: {len(self.cameras)} cameras but {len(self.images)} images")
        if len(self.cameras) == 0:
            raise ValueError("ReferenceViews: no views to take references from")

    def nearest(self, cameras: Cameras, k: int) -> Tensor:
        """(N, min(k, M)) indices of the views nearest each camera by pose distance, nearest first."""
        k = min(k, len(self.cameras))
        return nearest_views(cameras.camera_to_world.cpu(), self.cameras.camera_to_world.cpu(), k)


class ReadyFixer:
    """A fixer ready for renders of any size (see the module docstring).

    Args:
        fixer: a fixer name or `FixerSpec` (name, size, dtype, device, ...).
        batch_size: renders per network call.
    """

    def __init__(self, fixer: str | FixerSpec, batch_size: int = 4) -> None:
        if batch_size <= 0:
            raise ValueError(f"ReadyFixer: batch_size must be positive, got {batch_size}")
        self.spec = as_fixer_spec(fixer)
        self.batch_size = batch_size
        self._source: FixerSource | None = None
        self._net: nn.Module | None = None
        self._policy: SizePolicy | None = None
        self._dtype: str | None = self.spec.dtype  # None: leave the net's dtype and device alone
        self._ready_on: torch.device | None = None
        self._said_refs = False
        self._lock = threading.RLock()

    @classmethod
    def around(cls, net: nn.Module, name: str, size: SizeSpec = "auto", dtype: str | None = None,
               batch_size: int = 4) -> ReadyFixer:
        """A ready fixer around a built net (a training module's, a benchmark's).

        Args:
            net: a network with the fixer contract.
            name: for messages.
            size: its size policy (see `SizeSpec`).
            dtype: "auto", a dtype name, or None to leave the net's dtype, device and mode as they are
                (a training module's net, which Lightning manages).
        """
        ready = cls(FixerSpec(name=name, size=size), batch_size=batch_size)
        ready._net, ready._policy, ready._dtype = net, net.size_policy(size), dtype
        return ready

    @property
    def name(self) -> str:
        return self.spec.name

    def check(self) -> FixerSource:
        """Resolves the name (once) and checks cheaply that the fixer can load: before step 1."""
        with self._lock:
            if self._source is None:
                source = resolve_source(self.spec.name)
                options = self.spec.build_options(source)
                source.check(**options)
                self._source = source
            return self._source

    @property
    def needs_trial(self) -> bool:
        """Whether the network is code to try once before step 1 (`try_once`)."""
        return self._net is None and self.check().needs_trial

    @property
    def loaded(self) -> bool:
        """Whether the network is in memory."""
        return self._net is not None

    @property
    def net(self) -> nn.Module:
        """The network, loaded on first use (thread-safe)."""
        with self._lock:
            if self._net is None:
                source = self.check()
                self._net = source.build(**self.spec.build_options(source)).eval().requires_grad_(False)
                self._policy = self._net.size_policy(self.spec.size)
            return self._net

    @property
    def policy(self) -> SizePolicy:
        """The size policy (loads the network: the policy depends on it)."""
        _ = self.net
        assert self._policy is not None
        return self._policy

    def describe(self) -> str:
        """One line: the fixer, what it is, how it runs (logged at its first call)."""
        return f"fixer {self.name}: {self.net.describe()} | pre-processing: {self.policy.describe()}"

    def _ready(self, device: torch.device) -> nn.Module:
        net = self.net
        if self._ready_on == device or self._dtype is None:
            return net
        with self._lock:
            net.to(device)
            net.to_dtype(resolve_dtype(self._dtype, device))
            if self._ready_on is None:
                log.info(self.describe())
            self._ready_on = device
        return net

    def try_once(self, device: torch.device | str = "cpu") -> None:
        """Loads the network and fixes one small image where it will run: a fixer that cannot take
        an image (other inputs, broken code, another output) fails here, before step 1."""
        size = self.policy.size or (self.policy.multiple * 2, self.policy.multiple * 2)
        self(torch.full((1, 3, *size), 0.5, device=self.spec.device or device))

    def __call__(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """Fixes renders.

        Args:
            images: (N, 3, H, W) in [0, 1].
            refs: (N, K, 3, h, w) references in [0, 1] (any size), or None.

        Returns:
            (N, 3, H, W) in [0, 1], float32, on the images' device.

        Raises:
            FixerError: the network failed (its error named with the fixer and the images);
                FixerOutputError: its output is not finite, not floating point or of another shape.
        """
        if refs is not None and refs.shape[1] > 0 and self._takes_references(refs.shape[1]):
            refs = self.policy.refs_to_model(refs, tuple(images.shape[-2:]))
        else:
            refs = None
        return self._run(images, refs)

    def _takes_references(self, k: int) -> bool:
        if self.net.uses_references:
            return True
        if not self._said_refs:
            log.info("fixer %s takes no reference view: the %d reference(s) per render are ignored", self.name, k)
            self._said_refs = True
        return False

    def _run(self, images: Tensor, refs: Tensor | None) -> Tensor:
        """Renders (N, 3, H, W) with references already at the size they run at, in batches."""
        out = [self._fix_batch(images[i:i + self.batch_size], None if refs is None else refs[i:i + self.batch_size])
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else images.float().clone()

    @torch.no_grad()
    def _fix_batch(self, images: Tensor, refs: Tensor | None) -> Tensor:
        device = torch.device(self.spec.device) if self.spec.device and self._dtype is not None else images.device
        net = self._ready(device)
        h, w = images.shape[-2:]
        x = self.policy.to_model(images.to(device, torch.float32))
        r = refs.to(device, torch.float32) if refs is not None else None
        lo, hi = net.value_range
        try:
            y = net(x * (hi - lo) + lo if (lo, hi) != (0.0, 1.0) else x, r)
        except FixerError:
            raise
        except Exception as err:  # noqa: BLE001 - a user's network may raise anything: say which fixer
            raise FixerError(f"fixer {self.name}: failed on {len(images)} image(s) of {h}x{w} (run at "
                             f"{x.shape[-2]}x{x.shape[-1]}): {type(err).__name__}: {_gist(err)}") from err
        self._check_output(y, tuple(x.shape))
        y = (y.float() - lo) / (hi - lo) if (lo, hi) != (0.0, 1.0) else y.float()
        return self.policy.to_input(y.clamp(0, 1), (h, w)).to(images.device)

    def _check_output(self, y: object, shape: tuple[int, ...]) -> None:
        """The raw output, before any clamp or cast: a floating tensor of the input's shape, finite."""
        if not isinstance(y, Tensor):
            raise FixerOutputError(f"fixer {self.name}: returned {type(y).__name__}, not an image tensor")
        if not y.is_floating_point():
            lo, hi = self.net.value_range
            raise FixerOutputError(f"fixer {self.name}: returned {str(y.dtype).replace('torch.', '')} values; a fixer "
                                   f"returns floating point images in [{lo:g}, {hi:g}] (an integer image would be read "
                                   "as saturated values). Nothing was written for them.")
        if tuple(y.shape) != shape:
            raise FixerOutputError(f"fixer {self.name}: returned {tuple(y.shape)} for an input of {shape}; a fixer "
                                   "returns one image per input, of its size")
        check_finite(y, self.name)

    def fix_views(self, images: Tensor, cameras: Cameras, views: ReferenceViews | None,
                  num_refs: int = 1) -> tuple[Tensor, Tensor | None]:
        """Fixes renders with the nearest clean views as references.

        Args:
            images: (N, 3, H, W) renders in [0, 1].
            cameras: the N cameras they were rendered from.
            views: the clean views to choose references from; None: no references.
            num_refs: references per render (0: none).

        Returns:
            (N, 3, H, W) fixed renders in [0, 1], and (N, max(num_refs, 1)) indices into `views` of
            the nearest views (None without views), for showing them.
        """
        if num_refs < 0:
            raise ValueError(f"fixer {self.name}: num_refs must be >= 0, got {num_refs}")
        if views is None:
            return self(images), None
        idx = views.nearest(cameras, max(num_refs, 1))
        if num_refs == 0 or not self._takes_references(num_refs):
            return self._run(images, None), idx
        # Each distinct reference image goes to the size the renders run at once, then is gathered.
        unique, inverse = idx.unique(return_inverse=True)
        size = tuple(images.shape[-2:])
        resized = torch.stack([self.policy.refs_to_model(views.images[j], size) for j in unique.tolist()])
        return self._run(images, resized[inverse]), idx


def _gist(err: BaseException) -> str:
    """An error in one line: its first line, and its last where they differ (TorchScript puts the
    model's own message after a serialized traceback)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    return (lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}")[:400]
