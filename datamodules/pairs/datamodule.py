"""Training pairs for the fixer: (degraded render, clean target, K clean references).

The pairs come from a source object (`datamodules.pairs.sources`): `JsonPairs` (the reference
code's data file, nv-tlabs/Difix3D `--dataset_path`, as curation writes it) or `SyntheticPairs`
(clean images, a shifted crop of the same image as the reference, `degradations.Degrader` for
the input); `RenderFolder` gives renders to fix in `predict`.

Batches (contract): {"image": (B, 3, H, W) degraded, "target": (B, 3, H, W),
"refs": (B, K, 3, H, W), "prompt": list[str], "name": list[str]}, all images in [0, 1].
Predict batches add "orig_size" (B, 2) = native (H, W) of each render and carry "target"
only when the source has one.

The pairs JSON reading and validation live in `datamodules.pairs.pairs_json`, the datasets in
`datamodules.pairs.datasets`; their public names are re-exported here.
"""
from __future__ import annotations

from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from datamodules.pairs.datasets import PairDataset, SyntheticPairDataset
from datamodules.pairs.record import DEFAULT_PROMPT
from datamodules.pairs.pairs_json import PairDataError, PairItem, SizeArg, _as_hw, output_size, read_pairs_json, validate_items
from datamodules.pairs.sources import JsonPairs, PairLayout, RenderFolder, SyntheticPairs

__all__ = [
    "JsonPairs",
    "PairDataError",
    "PairDataModule",
    "PairDataset",
    "PairItem",
    "RenderFolder",
    "SizeArg",
    "SyntheticPairDataset",
    "SyntheticPairs",
    "output_size",
    "read_pairs_json",
    "validate_items",
]


class PairDataModule(LightningDataModule):
    """Training/validation/predict pairs for the fixer, from a pairs JSON or synthesised.

    Args:
        source: where the pairs come from: `JsonPairs` (a pairs JSON: ``source: {path: ...}``)
            or `SyntheticPairs` (``source: {clean_dir: ...}`` or procedural frames); None: no
            training data (predict from ``predict`` only).
        predict: renders to fix in `predict` (`RenderFolder`); None: the source's test items
            (JSON "test" split, or the synthetic validation items).
        num_refs: references per item K (batch "refs" is (B, K, 3, H, W)); items with
            fewer repeat their last, 0 gives an empty K axis and ignores "ref_image".
        resolution: resize of every image: (H, W) exactly, an int = shorter side (aspect
            kept), None = native size. Procedural synthetic frames are generated at this
            size (int = square); crop_size, when set, is cut from them.
        crop_size: crop (int = square, or (H, W)): random in training, centred otherwise,
            the same window for image, target and references. Not applied to predict.
        background: RGB in [0, 1] that RGBA files are composited over; None drops alpha.
        prompt: prompt of synthetic items and of JSON items without "prompt".
        batch_size: training batch size.
        val_batch_size: validation/test/predict batch size (None: batch_size).
        num_workers: DataLoader workers.
        seed: base seed of synthetic content, crops and degradations.
    """

    def __init__(
        self,
        source: JsonPairs | SyntheticPairs | None = None,
        predict: RenderFolder | None = None,
        num_refs: int = 1,
        resolution: int | tuple[int, int] | None = None,
        crop_size: int | tuple[int, int] | None = None,
        background: tuple[float, float, float] | None = None,
        prompt: str = DEFAULT_PROMPT,
        batch_size: int = 1,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if source is None and predict is None:
            raise ValueError("PairDataModule: needs a source (JsonPairs: the pairs JSON, or SyntheticPairs) or, for "
                             "predict only, predict (a RenderFolder)")
        if num_refs < 0 or batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"PairDataModule: need num_refs >= 0, batch_size >= 1, num_workers >= 0; "
                f"got {num_refs}, {batch_size}, {num_workers}"
            )
        if isinstance(resolution, list):  # YAML gives lists
            resolution = tuple(resolution)
        if resolution is not None and not isinstance(resolution, int):
            resolution = _as_hw(resolution, "resolution")
        elif isinstance(resolution, int) and resolution <= 0:
            raise ValueError(f"PairDataModule: resolution must be positive, got {resolution}")
        self.source, self.predict, self.num_workers = source, predict, num_workers
        self.layout = PairLayout(
            num_refs=num_refs, resolution=resolution, crop_hw=_as_hw(crop_size, "crop_size") if crop_size is not None else None,
            background=tuple(background) if background is not None else None, prompt=prompt, seed=seed,
            batch_size=batch_size, val_batch_size=val_batch_size or batch_size,
        )
        self.datasets: dict[str, Dataset] = {}

    @property
    def num_refs(self) -> int:
        """References per item K (every source of a `mixed.MixedPairDataModule` needs the same)."""
        return self.layout.num_refs

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

        What a further training source of `mixed.MixedPairDataModule` needs: its pairs
        JSON may hold a "train" split only (e.g. pairs curated from other scenes).
        """
        if "train" not in self.datasets:
            self.datasets["train"] = self._build("train")
        return self.datasets["train"]

    def _build(self, split: str) -> Dataset:
        if split == "predict" and self.predict is not None:
            return self.predict.dataset(split, self.layout)
        if self.source is None:
            raise ValueError(f"PairDataModule: the {split!r} split needs a source (JsonPairs: the pairs JSON, or "
                             "SyntheticPairs); predict alone is given")
        return self.source.dataset(split, self.layout)

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
        return self._loader("train", self.layout.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.layout.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.layout.val_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.layout.val_batch_size, shuffle=False)
