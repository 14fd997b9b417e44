"""Pair datasets for the fixer: pairs read from files, and pairs synthesised from clean images.

Both give the batch layout documented in `datamodules.pairs.datamodule`; `datamodules.pairs.datamodule.PairDataModule`
builds them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.pairs.degradations import Degrader, make_generator, procedural_image
from datamodules.files.image_io import load_image, read_image_size
from datamodules.pairs.record import DEFAULT_PROMPT
from datamodules.pairs.pairs_json import PairDataError, PairItem, SizeArg, output_size

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "predict": 1}  # synthetic predict = val items
_CLEAN_STREAM = 7  # separates "which clean image" seeds from "which degradation" seeds

def _crop_box(height: int, width: int, crop_hw: tuple[int, int] | None, generator: torch.Generator | None) -> tuple[int, int, int, int]:
    """(top, left, h, w): random when a generator is given, else centred."""
    if crop_hw is None:
        return 0, 0, height, width
    ch, cw = crop_hw
    if generator is None:
        return (height - ch) // 2, (width - cw) // 2, ch, cw
    top = int(torch.randint(0, height - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - cw + 1, (1,), generator=generator))
    return top, left, ch, cw


def _train_generator(seed: int, split: str, index: int) -> torch.Generator:
    # Fresh randomness each time an item is drawn, reproducible under seed_everything:
    # one draw from torch's global RNG (per-worker seeded by Lightning) salts the seed.
    salt = int(torch.randint(0, 2**62, (1,)))
    return make_generator(seed, _SPLIT_CODES[split], index, salt)


def augment_views(stack: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random mirror and colour-channel order for all views of a pair.

    A fixer trained on a few scenes otherwise learns their palette and layout (measured: one
    trained on procedural scenes painted their pastel sky stripes into lego's white
    background); with the channels shuffled it has to take colours from the render and the
    reference. Render, target and references get the same transform, so the pair stays a pair.

    Args:
        stack: (V, 3, H, W) views of one pair.
        generator: the item's training generator.

    Returns:
        (V, 3, H, W), mirrored left-right with probability 1/2, channels in a random order.
    """
    if bool(torch.rand((), generator=generator) < 0.5):
        stack = stack.flip(-1)
    return stack[:, torch.randperm(3, generator=generator)].contiguous()


class PairDataset(Dataset):
    """Pairs read from files (a pairs JSON split, or a predict folder).

    Args:
        items: validated PairItems (size_wh filled).
        origin: JSON file or folder, for error messages.
        split: "train" (random crops) or "val"/"test"/"predict" (centre crops).
        resolution: see `output_size`.
        crop_hw: (H, W) crop, or None.
        background: RGB to composite RGBA files over, or None to drop alpha.
        seed: base seed for training crops.
        augment: training only: a random mirror and colour-channel order, the same for render,
            target and references (see `augment_views`).
    """

    def __init__(
        self,
        items: list[PairItem],
        origin: Path,
        split: str,
        resolution: SizeArg = None,
        crop_hw: tuple[int, int] | None = None,
        background: tuple[float, float, float] | None = None,
        seed: int = 0,
        augment: bool = False,
    ) -> None:
        self.items = items
        self.origin = origin
        self.split = split
        self.resolution = resolution
        self.crop_hw = crop_hw
        self.background = background
        self.seed = seed
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, item: PairItem, path: Path, size_hw: tuple[int, int]) -> torch.Tensor:
        try:
            return load_image(path, size=(size_hw[1], size_hw[0]), background=self.background)
        except (FileNotFoundError, ValueError) as error:
            raise PairDataError(f"{self.origin}: entry {item.entry}: {error}") from error

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        size_wh = item.size_wh or read_image_size(item.image)
        out_hw = output_size(size_wh, self.resolution)
        image = self._load(item, item.image, out_hw)
        views = [image]
        if item.target is not None:
            views.append(self._load(item, item.target, out_hw))
        # References are resized to the image's output size (validation guarantees they
        # already match when no resolution is set).
        views += [self._load(item, ref, out_hw) for ref in item.refs]
        stack = torch.stack(views)  # (V, 3, H, W)

        generator = _train_generator(self.seed, "train", index) if self.split == "train" else None
        if self.split != "predict":
            top, left, ch, cw = _crop_box(*out_hw, self.crop_hw, generator)
            stack = stack[..., top : top + ch, left : left + cw]
        if self.augment and generator is not None:
            stack = augment_views(stack, generator)
        n_refs = len(item.refs)
        out: dict[str, Any] = {
            "image": stack[0].contiguous(),
            "refs": stack[len(stack) - n_refs :].contiguous() if n_refs else stack.new_zeros(0, *stack.shape[1:]),
            "prompt": item.prompt,
            "name": item.name,
        }
        if item.target is not None:
            out["target"] = stack[1].contiguous()
        if self.split == "predict":
            out["orig_size"] = torch.tensor([size_wh[1], size_wh[0]], dtype=torch.long)
        return out


class SyntheticPairDataset(Dataset):
    """Pairs manufactured from clean images: target crop, shifted-crop references, degraded input.

    Clean frames are procedural (`procedural_image`, seeded by split and index, so each
    index is one fixed clean image) or files (cycled by index). The target is a crop of
    the frame; each reference is the crop at a small random offset (|dy|, |dx| <=
    max_ref_shift, like a nearby camera; the frame border is replicated where needed);
    the input is `degrader(target)`. Training draws crops, shifts and degradations afresh
    each time; other splits seed them by index (identical every epoch and run).

    Args:
        length: number of items.
        split: "train", "val", "test" or "predict" (= the val items).
        out_hw: (H, W) of every output view.
        num_refs: K references.
        degrader: the degradation sampler.
        clean_files: clean images, or None for procedural frames.
        resolution: resize applied to clean files (see `output_size`).
        max_ref_shift: largest reference offset in pixels.
        background: RGB to composite RGBA clean files over.
        prompt: prompt of every item.
        seed: base seed.
        frame_hw: (H, W) of procedural frames (>= out_hw; default out_hw); the crop moves
            within it, plus a max_ref_shift margin on every side.
    """

    def __init__(
        self,
        length: int,
        split: str,
        out_hw: tuple[int, int],
        num_refs: int,
        degrader: Degrader,
        clean_files: list[Path] | None = None,
        resolution: SizeArg = None,
        max_ref_shift: int = 6,
        background: tuple[float, float, float] | None = None,
        prompt: str = DEFAULT_PROMPT,
        seed: int = 0,
        frame_hw: tuple[int, int] | None = None,
    ) -> None:
        self.length = length
        self.split = split
        self.out_hw = out_hw
        self.frame_hw = (max(frame_hw[0], out_hw[0]), max(frame_hw[1], out_hw[1])) if frame_hw else out_hw
        self.num_refs = num_refs
        self.degrader = degrader
        self.clean_files = clean_files
        self.resolution = resolution
        self.max_ref_shift = max_ref_shift
        self.background = background
        self.prompt = prompt
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def clean_frame(self, index: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """The padded clean frame of item `index` and its target-offset range.

        Returns:
            frame (3, Hp, Wp); (y_lo, y_hi, x_lo, x_hi) inclusive range of the target crop's
            top-left corner that stays on real (unpadded) pixels.
        """
        m = self.max_ref_shift
        h, w = self.out_hw
        code = _SPLIT_CODES[self.split]
        if self.clean_files is None:
            generator = make_generator(self.seed, code, _CLEAN_STREAM, index)
            hf, wf = self.frame_hw
            frame = procedural_image(hf + 2 * m, wf + 2 * m, generator)
            return frame, (0, hf - h + 2 * m, 0, wf - w + 2 * m)
        path = self.clean_files[index % len(self.clean_files)]
        hf, wf = output_size(read_image_size(path), self.resolution)
        frame = load_image(path, size=(wf, hf), background=self.background)
        if h > hf or w > wf:
            raise PairDataError(f"{path}: clean image is {hf}x{wf} (HxW after resolution={self.resolution}), smaller than the {h}x{w} crop")
        frame = F.pad(frame[None], (m, m, m, m), mode="replicate")[0] if m else frame
        return frame, (m, m + hf - h, m, m + wf - w)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        frame, (y_lo, y_hi, x_lo, x_hi) = self.clean_frame(index)
        if self.split == "train":
            generator = _train_generator(self.seed, "train", index)
            top = int(torch.randint(y_lo, y_hi + 1, (1,), generator=generator))
            left = int(torch.randint(x_lo, x_hi + 1, (1,), generator=generator))
        else:
            generator = make_generator(self.seed, _SPLIT_CODES[self.split], index)
            top, left = (y_lo + y_hi) // 2, (x_lo + x_hi) // 2
        h, w = self.out_hw
        target = frame[:, top : top + h, left : left + w]

        refs = []
        m = self.max_ref_shift
        for _ in range(self.num_refs):
            dy, dx = (torch.randint(-m, m + 1, (2,), generator=generator) if m else torch.zeros(2, dtype=torch.long)).tolist()
            if m and dy == 0 and dx == 0:
                dx = 1  # a reference is another view: never the target itself
            ry = min(max(top + dy, 0), frame.shape[1] - h)
            rx = min(max(left + dx, 0), frame.shape[2] - w)
            refs.append(frame[:, ry : ry + h, rx : rx + w])
        refs_t = torch.stack(refs) if refs else target.new_zeros(0, 3, h, w)
        return {
            "image": self.degrader(target, generator).contiguous(),
            "target": target.contiguous(),
            "refs": refs_t.contiguous(),
            "prompt": self.prompt,
            "name": f"{self.split}_{index:05d}",
        }
