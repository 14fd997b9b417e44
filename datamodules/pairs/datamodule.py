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

The pairs JSON reading and validation live in `datamodules.pairs.pairs_json`, the datasets in
`datamodules.pairs.datasets`; their public names are re-exported here.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.pairs.degradations import DEGRADATIONS, Degrader
from datamodules.files.image_io import (IMAGE_EXTENSIONS, find_undecodable, list_images, read_image_size,
                                       warn_greyscale_among_colour)
from datamodules.pairs.datasets import PairDataset, SyntheticPairDataset
from datamodules.pairs.record import DEFAULT_PROMPT
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

__all__ = [
    "PairDataError",
    "PairDataModule",
    "PairDataset",
    "PairItem",
    "SizeArg",
    "SyntheticPairDataset",
    "output_size",
    "read_pairs_json",
    "validate_items",
]

log = logging.getLogger(__name__)


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
        augment: JSON training pairs only: a random mirror and colour-channel order per pair,
            the same for all its views (`pair_datasets.augment_views`). Not in the paper.
        train_order: the JSON's training items grouped by curation, "scene/strategy" groups
            in this order (`pairs_json.order_groups`; every group of the split listed once).
            None: file order, which for pairs curated by concurrent jobs is their finishing
            order and can change between runs.
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
        augment: bool = False,
        train_order: list[str] | None = None,
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
        self.augment = augment
        self.train_order = list(train_order) if train_order is not None else None
        self.datasets: dict[str, Dataset] = {}
        self._colour_checked: set[Path] = set()  # files already looked at for greyscale (said once)

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

    def train_dataset(self) -> Dataset:
        """The training split alone (built once, validated as in `setup`).

        What a further training source of `mixed_pairs.MixedPairDataModule` needs: its pairs
        JSON may hold a "train" split only (e.g. pairs curated from other scenes).
        """
        if "train" not in self.datasets:
            self.datasets["train"] = self._build("train")
        return self.datasets["train"]

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
        if split == "train" and self.train_order is not None:
            items = order_groups(items, self.train_order, self.json_path, json_split)
        crop_hw = self.crop_hw if split != "predict" else None
        validate_items(items, self.json_path, self.resolution, crop_hw)
        files = [p for it in items for p in (it.image, it.target, *it.refs) if p is not None]
        warn_greyscale_among_colour([p for p in files if p not in self._colour_checked], self.json_path)
        self._colour_checked.update(files)
        if self.verify_images:
            items = self._drop_undecodable(items, split)
        batch = self.batch_size if split == "train" else self.val_batch_size
        _check_batchable(items, self.json_path, self.resolution, crop_hw, batch, json_split)
        return PairDataset(items, self.json_path, split, self.resolution, crop_hw, self.background, self.seed,
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
