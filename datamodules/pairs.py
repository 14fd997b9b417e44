"""Training pairs for the fixer: (degraded render, clean target, K clean references).

Two sources feed the same batch layout:

* "json": the reference code's data file (nv-tlabs/Difix3D `--dataset_path`):
  `{"train": ..., "test": ...}` where each split is either a dict keyed by id (the
  reference layout) or a list of items, each
  `{"image": degraded render, "target_image": clean image, "ref_image": path or [paths],
  "prompt": str}`. Relative paths resolve against the JSON file's folder. An optional
  "val" split is used for validation, else "test".
* "synthetic": clean images (a folder, or procedurally generated), a shifted crop of the
  same image as the reference (a nearby view), and `degradations.Degrader` for the input.

Batches (contract): {"image": (B, 3, H, W) degraded, "target": (B, 3, H, W),
"refs": (B, K, 3, H, W), "prompt": list[str], "name": list[str]}, all images in [0, 1].
Predict batches add "orig_size" (B, 2) = native (H, W) of each render and carry "target"
only when the source has one.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.degradations import DEGRADATIONS, Degrader, make_generator, procedural_image
from datamodules.image_io import IMAGE_EXTENSIONS, find_undecodable, list_images, load_image, read_image_size
from datamodules.pair_record import DEFAULT_PROMPT, PairRecord

log = logging.getLogger(__name__)

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "predict": 1}  # synthetic predict = val items
_CLEAN_STREAM = 7  # separates "which clean image" seeds from "which degradation" seeds

SizeArg = int | tuple[int, int] | None


class PairDataError(ValueError):
    """Bad pair data; the message names the JSON file (or folder), the entry and the file."""


@dataclass
class PairItem:
    """One entry of a pairs source, paths already resolved.

    Attributes:
        name: output name (dict key, item "name"/"id", or image stem).
        entry: where it came from, for messages: "train['id']" or "test[3]".
        image: degraded render.
        target: clean image, None for predict-only folders.
        refs: exactly K reference paths (shorter lists padded by repeating the last).
        prompt: text prompt.
        size_wh: (width, height) of the image, filled by validation.
    """

    name: str
    entry: str
    image: Path
    target: Path | None
    refs: list[Path]
    prompt: str
    size_wh: tuple[int, int] | None = field(default=None)


def _as_hw(size: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    if isinstance(size, int):
        hw = (size, size)
    else:
        hw = tuple(int(s) for s in size)
        if len(hw) != 2:
            raise ValueError(f"{what} must be an int or (height, width), got {size}")
    if min(hw) <= 0:
        raise ValueError(f"{what} must be positive, got {size}")
    return hw  # type: ignore[return-value]


def output_size(size_wh: tuple[int, int], resolution: SizeArg) -> tuple[int, int]:
    """(height, width) after resizing an image of `size_wh` = (width, height).

    resolution: None keeps the native size; (H, W) resizes exactly; an int resizes the
    shorter side to it, keeping the aspect ratio (torchvision's Resize(int) convention).
    """
    width, height = size_wh
    if resolution is None:
        return height, width
    if isinstance(resolution, int):
        scale = resolution / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return _as_hw(resolution, "resolution")


def read_pairs_json(
    json_path: str | os.PathLike,
    split: str,
    num_refs: int,
    require_target: bool = True,
    default_prompt: str = DEFAULT_PROMPT,
) -> list[PairItem]:
    """Reads one split of a pairs JSON (list or dict-keyed layout) into PairItems.

    Args:
        json_path: the JSON file.
        split: "train", "val", "test".
        num_refs: references per item K; items with fewer repeat their last one, extra
            ones are dropped. K = 0 ignores "ref_image".
        require_target: "target_image" must be present.
        default_prompt: used when an item has no "prompt".

    Returns:
        The items, in file order.

    Raises:
        PairDataError: unreadable JSON, missing/empty split, missing key, bad value; the
            message names the file, split and entry.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise PairDataError(f"{json_path}: pairs JSON file not found")
    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PairDataError(f"{json_path}: not a readable JSON file ({error})") from error
    if not isinstance(data, dict) or split not in data:
        found = list(data) if isinstance(data, dict) else type(data).__name__
        raise PairDataError(f"{json_path}: no {split!r} split (top level has {found}); expected {{\"train\": ..., \"test\": ...}}")
    raw = data[split]
    if isinstance(raw, dict):
        entries = [(f"{split}[{key!r}]", str(key), value) for key, value in raw.items()]
    elif isinstance(raw, list):
        entries = [(f"{split}[{i}]", None, value) for i, value in enumerate(raw)]
    else:
        raise PairDataError(f"{json_path}: split {split!r} must be a list or a dict of items, got {type(raw).__name__}")
    if not entries:
        raise PairDataError(f"{json_path}: split {split!r} is empty")

    root = json_path.parent

    def resolve(value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else root / path

    items: list[PairItem] = []
    for entry, key_name, value in entries:
        try:
            record = PairRecord.from_json(value, f"{json_path}: entry {entry}", require_target, num_refs > 0, default_prompt)
        except ValueError as error:
            raise PairDataError(str(error)) from None
        image = resolve(record.image)
        refs: list[Path] = []
        if num_refs > 0:
            refs = [resolve(r) for r in record.ref_image][:num_refs]
            refs += [refs[-1]] * (num_refs - len(refs))
        target = resolve(record.target_image) if record.target_image is not None else None
        name = key_name or record.name or image.stem
        items.append(PairItem(name=name, entry=entry, image=image, target=target, refs=refs, prompt=record.prompt))
    _deduplicate_names(items)
    return items


def _deduplicate_names(items: list[PairItem]) -> None:
    """Appends the position to names that repeat, so output files never collide."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.name] = counts.get(item.name, 0) + 1
    for index, item in enumerate(items):
        if counts[item.name] > 1:
            item.name = f"{item.name}_{index:05d}"


def validate_items(items: list[PairItem], origin: Path, resolution: SizeArg, crop_hw: tuple[int, int] | None) -> None:
    """Checks every file of every item from its header (no decoding) and fills size_wh.

    Checks: the file exists and is an image; target has the image's size; references have
    it too unless `resolution` is set (then they are resized); `crop_hw` fits the resized
    image.

    Raises:
        PairDataError: naming `origin`, the entry and the file.
    """
    for item in items:
        def size_of(path: Path, role: str) -> tuple[int, int]:
            try:
                return read_image_size(path)
            except FileNotFoundError:
                raise PairDataError(f"{origin}: entry {item.entry}: {role} file not found: {path}") from None
            except ValueError as error:
                raise PairDataError(f"{origin}: entry {item.entry}: {role} is not a readable image: {path} ({error.__cause__ or error})") from None

        image_wh = size_of(item.image, "image")
        if item.target is not None:
            target_wh = size_of(item.target, "target_image")
            if target_wh != image_wh:
                raise PairDataError(
                    f"{origin}: entry {item.entry}: size mismatch: image {item.image} is {image_wh[0]}x{image_wh[1]} "
                    f"but target_image {item.target} is {target_wh[0]}x{target_wh[1]} (pixels must align)"
                )
        for ref in dict.fromkeys(item.refs):
            ref_wh = size_of(ref, "ref_image")
            if resolution is None and ref_wh != image_wh:
                raise PairDataError(
                    f"{origin}: entry {item.entry}: size mismatch: image {item.image} is {image_wh[0]}x{image_wh[1]} "
                    f"but ref_image {ref} is {ref_wh[0]}x{ref_wh[1]}; set `resolution` to resize all views"
                )
        item.size_wh = image_wh
        if crop_hw is not None:
            out_h, out_w = output_size(image_wh, resolution)
            if crop_hw[0] > out_h or crop_hw[1] > out_w:
                raise PairDataError(
                    f"{origin}: entry {item.entry}: crop_size {crop_hw[0]}x{crop_hw[1]} (HxW) is larger than "
                    f"image {item.image} ({out_h}x{out_w} after resolution={resolution})"
                )


def _check_batchable(items: list[PairItem], origin: Path, resolution: SizeArg, crop_hw: tuple[int, int] | None, batch_size: int, split: str) -> None:
    """Batches need one size: fail early (not in collate) when items would differ."""
    if batch_size <= 1 or crop_hw is not None or (resolution is not None and not isinstance(resolution, int)):
        return
    first = items[0]
    first_hw = output_size(first.size_wh, resolution)
    for item in items[1:]:
        hw = output_size(item.size_wh, resolution)
        if hw != first_hw:
            raise PairDataError(
                f"{origin}: {split} batch_size {batch_size} needs one image size, but entry {first.entry} "
                f"({first.image}) gives {first_hw} and entry {item.entry} ({item.image}) gives {hw} (HxW); "
                "set resolution=(H, W) or crop_size, or use batch size 1"
            )


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
    ) -> None:
        self.items = items
        self.origin = origin
        self.split = split
        self.resolution = resolution
        self.crop_hw = crop_hw
        self.background = background
        self.seed = seed

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


class PairDataModule(LightningDataModule):
    """Training/validation/predict pairs for the fixer, from a pairs JSON or synthesised.

    Args:
        source: "json" (the reference code's data file) or "synthetic".
        json_path: the pairs JSON (source "json"). Relative paths inside resolve against
            its folder. Validation uses its "val" split when present, else "test".
        num_refs: references per item K (batch "refs" is (B, K, 3, H, W)); items with
            fewer repeat their last, 0 gives an empty K axis and ignores "ref_image".
        resolution: resize of every image: (H, W) exactly, an int = shorter side (aspect
            kept), None = native size. Procedural synthetic frames are generated at this
            size (int = square); crop_size, when set, is cut from them.
        crop_size: crop (int = square, or (H, W)): random in training, centred otherwise,
            the same window for image, target and references. Not applied to predict.
        clean_dir: folder of clean images for the synthetic source (None: procedural).
            Its last tenth (at least one file) is held out for validation.
        num_train: synthetic training items per epoch.
        num_val: synthetic validation (and test) items.
        degradations: synthetic degradations to draw from (subset of
            "blur", "lowres", "ghosting", "floaters", "color", "noise"); empty = identity.
        degradation_strength: scales all degradation magnitudes (1.0 = moderate).
        degradation_probability: chance each listed degradation is applied to an item.
        max_ref_shift: synthetic reference offset from the target crop, in pixels.
        predict_dir: folder of renders to fix in `predict` (else the JSON "test" split, or
            the synthetic validation items).
        predict_ref_dir: folder with one reference per render, matched by file stem (used
            K times); None: no references (K = 0) for predict_dir.
        background: RGB in [0, 1] that RGBA files are composited over; None drops alpha.
        prompt: prompt of synthetic items and of JSON items without "prompt".
        batch_size: training batch size.
        val_batch_size: validation/test/predict batch size (None: batch_size).
        num_workers: DataLoader workers.
        seed: base seed of synthetic content, crops and degradations.
        verify_images: decode every image of a pairs JSON once at setup (a truncated file
            passes the header check and would crash training when first loaded).
        bad_images: "error" stops at setup naming the files; "skip" drops the items that use
            them with a warning that names and counts them.
    """

    def __init__(
        self,
        source: Literal["json", "synthetic"] = "json",
        json_path: str | None = None,
        num_refs: int = 1,
        resolution: int | tuple[int, int] | None = None,
        crop_size: int | tuple[int, int] | None = None,
        clean_dir: str | None = None,
        num_train: int = 512,
        num_val: int = 8,
        degradations: tuple[str, ...] = DEGRADATIONS,
        degradation_strength: float = 1.0,
        degradation_probability: float = 0.5,
        max_ref_shift: int = 6,
        predict_dir: str | None = None,
        predict_ref_dir: str | None = None,
        background: tuple[float, float, float] | None = None,
        prompt: str = DEFAULT_PROMPT,
        batch_size: int = 1,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        verify_images: bool = True,
        bad_images: Literal["error", "skip"] = "error",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if bad_images not in ("error", "skip"):
            raise ValueError(f"PairDataModule: bad_images must be 'error' or 'skip', got {bad_images!r}")
        self.verify_images = verify_images
        self.bad_images = bad_images
        self.skipped_items: dict[str, int] = {}
        if source not in ("json", "synthetic"):
            raise ValueError(f"PairDataModule: source must be 'json' or 'synthetic', got {source!r}")
        if source == "json" and json_path is None and predict_dir is None:
            raise ValueError("PairDataModule: source='json' needs json_path (the pairs JSON file) or, for predict only, predict_dir")
        if num_refs < 0 or batch_size < 1 or num_workers < 0 or max_ref_shift < 0:
            raise ValueError(
                f"PairDataModule: need num_refs >= 0, batch_size >= 1, num_workers >= 0, max_ref_shift >= 0; "
                f"got {num_refs}, {batch_size}, {num_workers}, {max_ref_shift}"
            )
        if isinstance(resolution, list):  # YAML gives lists
            resolution = tuple(resolution)
        if resolution is not None and not isinstance(resolution, int):
            resolution = _as_hw(resolution, "resolution")
        elif isinstance(resolution, int) and resolution <= 0:
            raise ValueError(f"PairDataModule: resolution must be positive, got {resolution}")
        self.source = source
        self.json_path = Path(json_path).expanduser() if json_path else None
        self.num_refs = num_refs
        self.resolution = resolution
        self.crop_hw = _as_hw(crop_size, "crop_size") if crop_size is not None else None
        self.clean_dir = Path(clean_dir).expanduser() if clean_dir else None
        self.num_train = num_train
        self.num_val = num_val
        self.degrader = Degrader(tuple(degradations), degradation_strength, degradation_probability)
        self.max_ref_shift = max_ref_shift
        self.predict_dir = Path(predict_dir).expanduser() if predict_dir else None
        self.predict_ref_dir = Path(predict_ref_dir).expanduser() if predict_ref_dir else None
        self.background = tuple(background) if background is not None else None
        self.prompt = prompt
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Builds (and validates) the datasets the stage needs; idempotent."""
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
            None: ("train", "val", "test", "predict"),
        }[stage]
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self._build(split)

    def _build(self, split: str) -> Dataset:
        if split == "predict" and self.predict_dir is not None:
            return self._build_predict_folder()
        if self.source == "synthetic":
            return self._build_synthetic(split)
        return self._build_json(split)

    def _build_json(self, split: str) -> PairDataset:
        if self.json_path is None:
            raise ValueError(f"PairDataModule: the {split!r} split of source='json' needs json_path (the pairs JSON file)")
        json_split = split
        if split == "val":
            try:
                has_val = "val" in json.loads(self.json_path.read_text())
            except (OSError, ValueError):
                has_val = False  # read_pairs_json reports the problem below
            json_split = "val" if has_val else "test"
        elif split == "predict":
            json_split = "test"
        items = read_pairs_json(self.json_path, json_split, self.num_refs, require_target=split != "predict", default_prompt=self.prompt)
        crop_hw = self.crop_hw if split != "predict" else None
        validate_items(items, self.json_path, self.resolution, crop_hw)
        if self.verify_images:
            items = self._drop_undecodable(items, split)
        batch = self.batch_size if split == "train" else self.val_batch_size
        _check_batchable(items, self.json_path, self.resolution, crop_hw, batch, json_split)
        return PairDataset(items, self.json_path, split, self.resolution, crop_hw, self.background, self.seed)

    def _drop_undecodable(self, items: list[PairItem], split: str) -> list[PairItem]:
        """Fully decodes every file once; bad ones fail the setup or are skipped (bad_images)."""
        bad = find_undecodable([p for it in items for p in (it.image, it.target, *it.refs) if p is not None])
        if not bad:
            return items
        uses_bad = [it for it in items if any(p in bad for p in (it.image, it.target, *it.refs))]
        listing = "; ".join(f"{p} ({why})" for p, why in list(bad.items())[:5])
        if self.bad_images == "error":
            raise PairDataError(
                f"{self.json_path}: {len(bad)} image file(s) do not decode (truncated or corrupt), used by "
                f"{len(uses_bad)} {split} item(s), e.g. entry {uses_bad[0].entry}: {listing}. Re-create them, or "
                "set bad_images: skip to train without those items"
            )
        kept = [it for it in items if it not in uses_bad]
        log.warning("PairDataModule: skipped %d of %d %s item(s) whose images do not decode: %s",
                    len(uses_bad), len(items), split, listing)
        self.skipped_items[split] = len(uses_bad)
        if not kept:
            raise PairDataError(f"{self.json_path}: no {split} item left after skipping undecodable images")
        return kept

    def _build_predict_folder(self) -> PairDataset:
        assert self.predict_dir is not None
        try:
            renders = list_images(self.predict_dir)
        except (FileNotFoundError, ValueError) as error:
            raise PairDataError(f"predict_dir: {error}") from error
        ref_index: dict[str, Path] = {}
        if self.predict_ref_dir is not None and self.num_refs > 0:
            try:
                ref_index = {p.stem: p for p in list_images(self.predict_ref_dir)}
            except (FileNotFoundError, ValueError) as error:
                raise PairDataError(f"predict_ref_dir: {error}") from error
        items = []
        for i, render in enumerate(renders):
            refs: list[Path] = []
            if ref_index:
                if render.stem not in ref_index:
                    raise PairDataError(
                        f"{self.predict_dir}: entry predict[{i}]: no reference for render {render.name} in "
                        f"{self.predict_ref_dir} (expected a file named {render.stem}{{{','.join(IMAGE_EXTENSIONS)}}})"
                    )
                refs = [ref_index[render.stem]] * self.num_refs
            items.append(PairItem(render.stem, f"predict[{i}]", render, None, refs, self.prompt))
        validate_items(items, self.predict_dir, self.resolution, None)
        _check_batchable(items, self.predict_dir, self.resolution, None, self.val_batch_size, "predict")
        return PairDataset(items, self.predict_dir, "predict", self.resolution, None, self.background, self.seed)

    def _synthetic_out_hw(self) -> tuple[int, int] | None:
        if self.crop_hw is not None:
            return self.crop_hw
        if self.resolution is None:
            return None
        if isinstance(self.resolution, int) and self.clean_dir is not None:
            return None  # shorter side only: the frame size decides
        return _as_hw(self.resolution, "resolution")

    def _build_synthetic(self, split: str) -> SyntheticPairDataset:
        out_hw = self._synthetic_out_hw()
        clean_files = None
        if self.clean_dir is not None:
            try:
                files = list_images(self.clean_dir)
            except (FileNotFoundError, ValueError) as error:
                raise PairDataError(f"clean_dir: {error}") from error
            held_out = max(1, len(files) // 10) if len(files) > 1 else 0
            clean_files = files[: len(files) - held_out] if split == "train" else files[len(files) - held_out :] or files
            if out_hw is None:  # no crop: every clean frame must give the same size
                sizes = {output_size(read_image_size(f), self.resolution) for f in clean_files}
                if len(sizes) > 1:
                    raise PairDataError(f"{self.clean_dir}: clean images give different sizes {sorted(sizes)} (HxW); set crop_size or resolution=(H, W)")
                out_hw = sizes.pop()
        elif out_hw is None:
            raise ValueError("PairDataModule: the procedural synthetic source needs crop_size or resolution (its image size)")
        length = self.num_train if split == "train" else self.num_val
        if length < 1:
            raise ValueError(f"PairDataModule: the synthetic {split} split is empty (num_{'train' if split == 'train' else 'val'}={length})")
        frame_hw = _as_hw(self.resolution, "resolution") if clean_files is None and self.resolution is not None else None
        return SyntheticPairDataset(
            length, split, out_hw, self.num_refs, self.degrader, clean_files, self.resolution,
            self.max_ref_shift, self.background, self.prompt, self.seed, frame_hw,
        )

    # ----------------------------------------------------------- dataloaders
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[split])
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.val_batch_size, shuffle=False)
