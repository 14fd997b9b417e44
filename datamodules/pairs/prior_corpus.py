"""Image corpus for the offline Difix prior (the stand-in for SD-Turbo's pretraining data).

Clean images only, from sources a fresh clone has or makes itself:
- "scenes": the procedural 3D scenes (`datamodules/procedural/`) ray-cast from a ring of cameras, one
  scene per seed (seeds apart from the demo's curation / held-out scenes);
- "patterns": 2D procedural images (`degradations.procedural_image`);
- "skimage": the sample photos scikit-image ships inside its wheel (`skimage/data`: astronaut,
  chelsea, coffee, rocket, ...), found without importing scikit-image;
- "sklearn": scikit-learn's two sample photos (china.jpg, flower.jpg) when installed;
- `extra_image_dirs`: any folders of photos (e.g. ../shared/data), only where present.

A missing optional source is skipped with a warning; an empty corpus fails naming what was
tried. Photos are split by file (held-out files never train), scenes by seed. Training items
are random 64x64 crops of a random pyramid level of a random image, randomly flipped; the
held-out set is fixed centre/corner crops, identical in every run.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.pairs.degradations import make_generator, procedural_image
from datamodules.files.image_io import load_image
from datamodules.procedural.scene import ProceduralScene, procedural_cameras, render_procedural

SOURCES = ("scenes", "patterns", "skimage", "sklearn")
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


def package_data_images(package: str, subdir: str) -> list[Path]:
    """Image files shipped inside an installed package, without importing it.

    Returns:
        sorted paths, or [] when the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    found: list[Path] = []
    for root in spec.submodule_search_locations:
        folder = Path(root) / subdir
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES]
    return sorted(found)


def pyramid(image: Tensor, short_sides: list[int], crop: int) -> list[Tensor]:
    """The image resized (antialiased) so its short side is each of `short_sides` (>= crop).

    Photos are large and the fixer sees 64x64 renders of whole objects: the coarse levels give
    scene-scale content, the fine ones texture.
    """
    h, w = image.shape[-2:]
    levels = []
    for side in sorted({max(crop, s) for s in short_sides if s <= min(h, w)} or {max(crop, min(h, w))}):
        scale = side / min(h, w)
        size = (max(crop, round(h * scale)), max(crop, round(w * scale)))
        levels.append(F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1))
    return levels


def render_scene_views(seed: int, num_views: int, size: int) -> Tensor:
    """(num_views, 3, size, size) ray-cast views of procedural scene `seed` from its camera ring."""
    c2w, K = procedural_cameras(num_views, size)
    return render_procedural(c2w, K, size, size, ProceduralScene.from_seed(seed))


class CropDataset(Dataset):
    """Random square crops (with horizontal flips) of random images of a pool.

    Args:
        pool: list of (3, H, W) images in [0, 1], each at least `crop` on both sides.
        length: items per epoch.
        crop: crop side.
    """

    def __init__(self, pool: list[Tensor], length: int, crop: int) -> None:
        if not pool:
            raise ValueError("CropDataset: empty image pool")
        self.pool, self.length, self.crop = pool, length, crop

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        # The global RNG (seed_everything, num_workers=0) draws a fresh crop every epoch.
        image = self.pool[int(torch.randint(len(self.pool), ()))]
        h, w = image.shape[-2:]
        top = int(torch.randint(h - self.crop + 1, ()))
        left = int(torch.randint(w - self.crop + 1, ()))
        out = image[:, top : top + self.crop, left : left + self.crop]
        return out.flip(-1).contiguous() if bool(torch.rand(()) < 0.5) else out.contiguous()


def fixed_crops(pool: list[Tensor], crop: int) -> Tensor:
    """Deterministic held-out crops: centre and two opposite corners of every image.

    Returns:
        (N, 3, crop, crop).
    """
    out = []
    for image in pool:
        h, w = image.shape[-2:]
        for top, left in ((h - crop) // 2, (w - crop) // 2), (0, 0), (h - crop, w - crop):
            out.append(image[:, top : top + crop, left : left + crop])
    return torch.stack(out)


class PriorCorpusDataModule(LightningDataModule):
    """Clean-image batches for `DifixPriorModule`: {"image": (B, 3, crop, crop) in [0, 1]}.

    Args:
        sources: any of "scenes", "patterns", "skimage", "sklearn".
        extra_image_dirs: further photo folders (searched recursively); absent ones are skipped.
        scene_seeds: procedural scene seeds for training.
        heldout_scene_seeds: procedural scene seeds for validation only.
        scene_views: cameras per scene ring.
        scene_size: render size of scene views (crops move inside it).
        num_patterns: training procedural 2D images (plus a quarter as many held out).
        heldout_photos: photo file stems kept out of training (validation only).
        short_sides: pyramid levels of photos (short side in pixels).
        max_photos_per_dir: cap on photos read from each extra folder.
        crop: training / validation image side.
        batch_size: training batch size.
        steps_per_epoch: training batches per epoch.
        val_batch_size: validation batch size.
        seed: seed of the procedural patterns.
    """

    def __init__(
        self,
        sources: list[str] = list(SOURCES),
        extra_image_dirs: list[str] = [],
        scene_seeds: list[int] = list(range(100, 110)),
        heldout_scene_seeds: list[int] = [900, 901],
        scene_views: int = 12,
        scene_size: int = 96,
        num_patterns: int = 64,
        heldout_photos: list[str] = ["coffee", "rocket", "motorcycle_left", "motorcycle_right"],
        short_sides: list[int] = [64, 96, 160, 256],
        max_photos_per_dir: int = 40,
        crop: int = 64,
        batch_size: int = 8,
        steps_per_epoch: int = 200,
        val_batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        unknown = sorted(set(sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"PriorCorpusDataModule.sources: unknown {unknown}; choose from {list(SOURCES)}")
        if scene_size < crop:
            raise ValueError(f"PriorCorpusDataModule: scene_size {scene_size} < crop {crop}")
        overlap = set(scene_seeds) & set(heldout_scene_seeds)
        if overlap:
            raise ValueError(f"PriorCorpusDataModule: scene seeds {sorted(overlap)} are both trained on and held out")
        self.save_hyperparameters()
        self.train_pool: list[Tensor] = []
        self.val_images: Tensor | None = None
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ corpus
    def photo_files(self) -> list[Path]:
        """Every photo file of the enabled photo sources and existing extra folders."""
        h = self.hparams
        files: list[Path] = []
        if "skimage" in h.sources:
            found = package_data_images("skimage", "data")
            if not found:
                warnings.warn("prior corpus: scikit-image is not installed; its sample photos are skipped", stacklevel=2)
            files += found
        if "sklearn" in h.sources:
            files += package_data_images("sklearn", "datasets/images")
        for folder in h.extra_image_dirs:
            if not Path(folder).is_dir():
                warnings.warn(f"prior corpus: extra_image_dirs entry {folder} does not exist; skipped", stacklevel=2)
                continue
            # Recursive (scene folders keep photos in images/ subfolders), capped per folder so
            # one big capture does not dominate the corpus.
            found = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
            files += found[: h.max_photos_per_dir]
        return files

    def setup(self, stage: str | None = None) -> None:
        """Loads photos, renders scenes, draws patterns (once)."""
        if self.train_pool:
            return
        h = self.hparams
        train: list[Tensor] = []
        val: list[Tensor] = []
        held = set(h.heldout_photos)
        n_photos = n_held = 0
        for path in self.photo_files():
            try:
                image = load_image(path)
            except ValueError as err:
                warnings.warn(f"prior corpus: skipping {path}: {err}", stacklevel=2)
                continue
            levels = pyramid(image, h.short_sides, h.crop)
            if path.stem in held:
                val += levels[:2]  # the two coarsest levels: object-scale content like the renders
                n_held += 1
            else:
                train += levels
                n_photos += 1
        if "scenes" in h.sources:
            for seed in h.scene_seeds:
                train += list(render_scene_views(seed, h.scene_views, h.scene_size))
            for seed in h.heldout_scene_seeds:
                val += list(render_scene_views(seed, max(2, h.scene_views // 4), h.crop))
        if "patterns" in h.sources:
            size = h.crop + h.crop // 2
            train += [procedural_image(size, size, make_generator(h.seed, 1, i)) for i in range(h.num_patterns)]
            val += [procedural_image(h.crop, h.crop, make_generator(h.seed, 2, i)) for i in range(max(1, h.num_patterns // 4))]
        if not train:
            raise ValueError(
                f"PriorCorpusDataModule: no training images (sources={list(h.sources)}, extra_image_dirs="
                f"{list(h.extra_image_dirs)}); enable 'scenes' or 'patterns', or install scikit-image"
            )
        self.counts = {"train_photos": n_photos, "heldout_photos": n_held, "train_levels": len(train)}
        self.train_pool = train
        self.val_images = fixed_crops(val, h.crop) if val else None

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        dataset = CropDataset(self.train_pool, h.steps_per_epoch * h.batch_size, h.crop)
        return DataLoader(dataset, batch_size=h.batch_size, shuffle=False, num_workers=0,
                          collate_fn=lambda items: {"image": torch.stack(items)})

    def val_dataloader(self) -> DataLoader | list:
        if self.val_images is None:
            return []
        return DataLoader(self.val_images, batch_size=self.hparams.val_batch_size, shuffle=False, num_workers=0,
                          collate_fn=lambda items: {"image": torch.stack(items)})
