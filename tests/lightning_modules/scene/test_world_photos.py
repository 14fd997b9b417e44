"""A reconstruction opened in the wrong world is caught by the training photos before step 1, and
``units: auto`` picks the world whose renders match them."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from datamodules.procedural.scene import ProceduralOptions
from datamodules.readers.scene_data import ReadOptions
from datamodules.scene.datamodule import SceneDataModule
from datamodules.scene.scene_setup import SceneSetup
from helpers.gaussian_files import fit_splats, write_dataparser_transforms, write_splatfacto_checkpoint
from lightning_modules.scene.gaussians.initial import InitSettings
from lightning_modules.scene.gaussians.module import GaussianSceneModule
from lightning_modules.scene.gaussians.ply import write_ply
from lightning_modules.scene.gaussians.reconstruction import GaussiansFile
from lightning_modules.scene.gaussians.similarity import transform_splats
from lightning_modules.scene.gaussians.world_units import splats_in_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[SceneSetup, dict[str, torch.Tensor], Path]:
    """The procedural scene (8 views at 32 px), Gaussians fitted to its 6 training photos (normalised
    world, 40 steps: ~21 dB) and the point_cloud.ply this project exports of them (original world)."""
    root = tmp_path_factory.mktemp("world_photos")
    dm = SceneDataModule(str(root / "scene"), read=ReadOptions(test_every=4),
                         procedural=ProceduralOptions(num_views=8, size=32))
    dm.setup()
    setup = dm.scene_setup()
    ours = fit_splats(setup.points, setup.point_colors, setup.train_cameras, dm.train_images)
    assert setup.transform is not None  # the reader normalises: original and normalised differ
    ply = write_ply(root / "point_cloud.ply", ours, transform=torch.linalg.inv(setup.transform))
    return setup, ours, ply


def _psnrs(message: str) -> dict[str, float]:
    return {u: float(p) for u, p in re.findall(r"(\w[\w.]*) (-?\d+\.\d+) dB", message)}


def test_the_right_world_passes_silently(scene: tuple) -> None:
    setup, ours, ply = scene
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splats = splats_in_scene(GaussiansFile(str(ply), units="original"), setup)
    assert torch.allclose(splats["means"], ours["means"], atol=1e-4)


@pytest.mark.parametrize("declared", ["gsplat", "normalised"])
def test_a_file_declared_in_the_wrong_world_warns_with_the_psnrs(scene: tuple, declared: str) -> None:
    setup, _, ply = scene
    with pytest.warns(UserWarning, match=rf"point_cloud.ply: init.file.units={declared}, but the training photos "
                                         r"say original") as caught:
        splats_in_scene(GaussiansFile(str(ply), units=declared), setup)
    message = next(str(w.message) for w in caught if "training photos" in str(w.message))
    print(message)  # the PSNRs docs/RESULTS.md quotes (pytest -s)
    psnrs = _psnrs(message)
    assert {"original", "normalised", "gsplat"} <= set(psnrs), message
    assert psnrs["original"] > psnrs[declared] + 3.0, message
    assert "units: original" in message


def test_units_auto_chooses_the_world_the_photos_explain(scene: tuple, tmp_path: Path) -> None:
    setup, ours, ply = scene
    module = GaussianSceneModule(init=InitSettings(file=GaussiansFile(str(ply), units="auto")))
    module.setup_scene(setup)  # what configure_model does, before step 1
    assert torch.allclose(module.gaussians.means.detach(), ours["means"], atol=1e-4)

    # The same Gaussians in a nerfstudio world: found by its dataparser_transforms.json.
    ns = torch.tensor([[0.0, -1.0, 0.0, 0.2], [1.0, 0.0, 0.0, -0.1], [0.0, 0.0, 1.0, 0.3], [0.0, 0.0, 0.0, 1.0]],
                      dtype=torch.float64)
    write_dataparser_transforms(tmp_path / "run" / "dataparser_transforms.json", ns, 0.5)
    in_ns = transform_splats(ours, torch.diag(torch.tensor([0.5, 0.5, 0.5, 1.0], dtype=torch.float64)) @ ns
                             @ torch.linalg.inv(setup.transform))
    ckpt = write_splatfacto_checkpoint(tmp_path / "run" / "nerfstudio_models" / "step-000000039.ckpt", in_ns)
    splats = splats_in_scene(GaussiansFile(str(ckpt), units="auto"), setup)
    assert torch.allclose(splats["means"], ours["means"], atol=1e-4)


def test_units_auto_needs_the_photos(scene: tuple) -> None:
    setup, _, ply = scene
    bare = SceneSetup(setup.train_cameras, setup.scene_scale, points=setup.points, transform=setup.transform)
    with pytest.raises(ValueError, match=r"point_cloud.ply: init.file.units=auto needs the scene's training photos"):
        splats_in_scene(GaussiansFile(str(ply), units="auto"), bare)


def test_the_check_runs_under_another_default_device(scene: tuple) -> None:
    # Lightning's configure_model runs under `with trainer.strategy.root_device:` (the GPU there);
    # a meta default device stands in for it: the file's mapping must stay on the CPU.
    setup, ours, ply = scene
    with torch.device("meta"):
        splats = splats_in_scene(GaussiansFile(str(ply), units="original"), setup, device="cpu")
    assert splats["means"].device.type == "cpu"
    assert torch.allclose(splats["means"], ours["means"], atol=1e-4)
