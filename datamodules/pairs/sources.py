"""Where `PairDataModule`'s pairs come from: one typed object per kind of source.

- `JsonPairs`: the reference code's pairs JSON (nv-tlabs/Difix3D ``--dataset_path``), e.g. what
  curation writes.
- `SyntheticPairs`: clean images (a folder, or procedurally generated) with a shifted crop of the
  same image as the reference and `degradations.Degrader` for the input.
- `RenderFolder`: renders to fix in ``predict`` (and references matched by file name).

Each builds the dataset of a split from the options every source shares (`PairLayout`); in YAML
a source is chosen by its fields or by ``class_path`` (``source: {path: pairs.json}`` or
``source: {class_path: datamodules.pairs.sources.SyntheticPairs, init_args: {...}}``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from datamodules.files.image_io import (IMAGE_EXTENSIONS, find_undecodable, list_images, read_image_size,
                                       warn_greyscale_among_colour)
from datamodules.pairs.datasets import PairDataset, SyntheticPairDataset
from datamodules.pairs.degradations import DEGRADATIONS, Degrader
from datamodules.pairs.pairs_json import (
    PairDataError,
    PairItem,
    SizeArg,
    _as_hw,
    _check_batchable,
    order_groups,
    output_size,
    read_pairs_json,
    validate_items,
)

__all__ = ["JsonPairs", "PairLayout", "RenderFolder", "SyntheticPairs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairLayout:
    """What every source's items share (`PairDataModule`'s own options; see there).

    Attributes:
        num_refs: references per item K.
        resolution: (H, W), an int shorter side, or None (native size).
        crop_hw: crop (H, W) of training / evaluation items, or None.
        background: RGB that RGBA files are composited over; None drops alpha.
        prompt: prompt of items without one.
        seed: base seed of content, crops and degradations.
        batch_size: training batch size.
        val_batch_size: validation / test / predict batch size.
    """

    num_refs: int
    resolution: SizeArg
    crop_hw: tuple[int, int] | None
    background: tuple[float, float, float] | None
    prompt: str
    seed: int
    batch_size: int
    val_batch_size: int

    def batch(self, split: str) -> int:
        return self.batch_size if split == "train" else self.val_batch_size


@dataclass
class JsonPairs:
    """The reference code's pairs JSON: ``{"train": ..., "test": ...}``, each split a dict keyed by
    id (the reference layout) or a list of items ``{"image", "target_image", "ref_image",
    "prompt"}`` (`pairs_json.read_pairs_json`). Validation uses its "val" split when present, else
    "test"; ``predict`` its "test" split.

    Attributes:
        path: the pairs JSON; relative paths inside resolve against its folder.
        train_order: the training items grouped by curation, "scene/strategy" groups in this order
            (`pairs_json.order_groups`; every group of the split listed once). None: file order,
            which for pairs curated by concurrent jobs is their finishing order.
        verify_images: decode every image once at setup (a truncated file passes the header
            check and would crash training when first loaded).
        bad_images: "error" stops at setup naming the files; "skip" drops the items that use
            them with a warning that names and counts them (counts in ``skipped``).
        augment: a random mirror and colour-channel order per training pair, the same for all its
            views (`datasets.augment_views`). Not in the paper.
    """

    path: str
    train_order: list[str] | None = None
    verify_images: bool = True
    bad_images: Literal["error", "skip"] = "error"
    augment: bool = False

    def __post_init__(self) -> None:
        if self.bad_images not in ("error", "skip"):
            raise ValueError(f"PairDataModule: source.bad_images must be 'error' or 'skip', got {self.bad_images!r}")
        self.skipped: dict[str, int] = {}  # items dropped per split (bad_images: skip)
        self._colour_checked: set[Path] = set()  # files already looked at for greyscale (said once)

    @property
    def file(self) -> Path:
        return Path(self.path).expanduser()

    def dataset(self, split: str, layout: PairLayout) -> PairDataset:
        """The items of ``split`` ("train", "val", "test", "predict"), checked before any step."""
        json_split = split
        if split == "val":
            try:
                has_val = "val" in json.loads(self.file.read_text())
            except (OSError, ValueError):
                has_val = False  # read_pairs_json reports the problem below
            json_split = "val" if has_val else "test"
        elif split == "predict":
            json_split = "test"
        items = read_pairs_json(self.file, json_split, layout.num_refs, require_target=split != "predict",
                                default_prompt=layout.prompt)
        if split == "train" and self.train_order is not None:
            items = order_groups(items, list(self.train_order), self.file, json_split)
        crop_hw = layout.crop_hw if split != "predict" else None
        validate_items(items, self.file, layout.resolution, crop_hw)
        files = [p for it in items for p in (it.image, it.target, *it.refs) if p is not None]
        warn_greyscale_among_colour([p for p in files if p not in self._colour_checked], self.file)
        self._colour_checked.update(files)
        if self.verify_images:
            items = self._drop_undecodable(items, split)
        _check_batchable(items, self.file, layout.resolution, crop_hw, layout.batch(split), json_split)
        return PairDataset(items, self.file, split, layout.resolution, crop_hw, layout.background, layout.seed,
                           augment=self.augment and split == "train")

    def _drop_undecodable(self, items: list[PairItem], split: str) -> list[PairItem]:
        """Fully decodes every file once; bad ones fail the setup or are skipped (bad_images)."""
        bad = find_undecodable([p for it in items for p in (it.image, it.target, *it.refs) if p is not None])
        if not bad:
            return items
        uses_bad = [it for it in items if any(p in bad for p in (it.image, it.target, *it.refs))]
        listing = "; ".join(f"{p} ({why})" for p, why in list(bad.items())[:5])
        if self.bad_images == "error":
            raise PairDataError(
                f"{self.file}: {len(bad)} image file(s) do not decode (truncated or corrupt), used by "
                f"{len(uses_bad)} {split} item(s), e.g. entry {uses_bad[0].entry}: {listing}. Re-create them, or "
                "set source.bad_images: skip to train without those items"
            )
        kept = [it for it in items if it not in uses_bad]
        log.warning("PairDataModule: skipped %d of %d %s item(s) whose images do not decode: %s",
                    len(uses_bad), len(items), split, listing)
        self.skipped[split] = len(uses_bad)
        if not kept:
            raise PairDataError(f"{self.file}: no {split} item left after skipping undecodable images")
        return kept


@dataclass
class SyntheticPairs:
    """Pairs made from clean images: a degraded copy as the input, a shifted crop of the same image
    as the reference (a nearby view). ``predict`` gives the validation items.

    Attributes:
        clean_dir: folder of clean images (None: procedural frames of ``resolution``). Its last
            tenth (at least one file) is held out for validation.
        num_train: training items per epoch.
        num_val: validation (and test) items.
        degradations: degradations to draw from (a subset of "blur", "lowres", "ghosting",
            "floaters", "color", "noise"); empty: the identity.
        degradation_strength: scales every degradation's magnitude (1.0 = moderate).
        degradation_probability: chance each listed degradation is applied to an item.
        max_ref_shift: reference offset from the target crop, in pixels.
    """

    clean_dir: str | None = None
    num_train: int = 512
    num_val: int = 8
    degradations: tuple[str, ...] = DEGRADATIONS
    degradation_strength: float = 1.0
    degradation_probability: float = 0.5
    max_ref_shift: int = 6

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val", "max_ref_shift"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PairDataModule: source.{name} must be an integer >= 0, got {value!r}")
        self.degradations = tuple(self.degradations)
        self.degrader  # noqa: B018 (unknown names and bad magnitudes fail now, not at setup)

    @property
    def degrader(self) -> Degrader:
        """The input degradations (a plain object: kept out of the hyperparameters)."""
        return Degrader(self.degradations, self.degradation_strength, self.degradation_probability)

    def dataset(self, split: str, layout: PairLayout) -> SyntheticPairDataset:
        """``num_train`` training items, or ``num_val`` validation / test / predict items."""
        out_hw = self._out_hw(layout)
        clean_files = None
        if self.clean_dir is not None:
            folder = Path(self.clean_dir).expanduser()
            try:
                files = list_images(folder)
            except (FileNotFoundError, ValueError) as error:
                raise PairDataError(f"source.clean_dir: {error}") from error
            held_out = max(1, len(files) // 10) if len(files) > 1 else 0
            clean_files = files[: len(files) - held_out] if split == "train" else files[len(files) - held_out :] or files
            if out_hw is None:  # no crop: every clean frame must give the same size
                sizes = {output_size(read_image_size(f), layout.resolution) for f in clean_files}
                if len(sizes) > 1:
                    raise PairDataError(f"{folder}: clean images give different sizes {sorted(sizes)} (HxW); set "
                                        "crop_size or resolution=(H, W)")
                out_hw = sizes.pop()
        elif out_hw is None:
            raise ValueError("PairDataModule: the procedural synthetic source needs crop_size or resolution (its image size)")
        length = self.num_train if split == "train" else self.num_val
        if length < 1:
            raise ValueError(f"PairDataModule: the synthetic {split} split is empty "
                             f"(source.num_{'train' if split == 'train' else 'val'}={length})")
        frame_hw = _as_hw(layout.resolution, "resolution") if clean_files is None and layout.resolution is not None else None
        return SyntheticPairDataset(
            length, split, out_hw, layout.num_refs, self.degrader, clean_files, layout.resolution,
            self.max_ref_shift, layout.background, layout.prompt, layout.seed, frame_hw,
        )

    def _out_hw(self, layout: PairLayout) -> tuple[int, int] | None:
        if layout.crop_hw is not None:
            return layout.crop_hw
        if layout.resolution is None:
            return None
        if isinstance(layout.resolution, int) and self.clean_dir is not None:
            return None  # shorter side only: the frame size decides
        return _as_hw(layout.resolution, "resolution")


@dataclass
class RenderFolder:
    """Renders to fix in ``predict`` (instead of the source's test / validation items).

    Attributes:
        renders: folder of renders (names become the output names).
        references: folder with one reference per render, matched by file stem (used K times);
            None: no references (K = 0).
    """

    renders: str
    references: str | None = None

    def dataset(self, split: str, layout: PairLayout) -> PairDataset:
        """The predict items (native size unless ``resolution``; never cropped)."""
        folder = Path(self.renders).expanduser()
        try:
            renders = list_images(folder)
        except (FileNotFoundError, ValueError) as error:
            raise PairDataError(f"predict.renders: {error}") from error
        ref_index: dict[str, Path] = {}
        ref_folder = Path(self.references).expanduser() if self.references else None
        if ref_folder is not None and layout.num_refs > 0:
            try:
                ref_index = {p.stem: p for p in list_images(ref_folder)}
            except (FileNotFoundError, ValueError) as error:
                raise PairDataError(f"predict.references: {error}") from error
        items = []
        for i, render in enumerate(renders):
            refs: list[Path] = []
            if ref_index:
                if render.stem not in ref_index:
                    raise PairDataError(
                        f"{folder}: entry predict[{i}]: no reference for render {render.name} in {ref_folder} "
                        f"(expected a file named {render.stem}{{{','.join(IMAGE_EXTENSIONS)}}})"
                    )
                refs = [ref_index[render.stem]] * layout.num_refs
            items.append(PairItem(render.stem, f"predict[{i}]", render, None, refs, layout.prompt))
        validate_items(items, folder, layout.resolution, None)
        _check_batchable(items, folder, layout.resolution, None, layout.val_batch_size, "predict")
        return PairDataset(items, folder, "predict", layout.resolution, None, layout.background, layout.seed)


# Sources are hyperparameters of PairDataModule, so checkpoints hold them; allow them in
# weights-only loading.
torch.serialization.add_safe_globals([JsonPairs, SyntheticPairs, RenderFolder])
