"""The dataset's table: FID over all test images together (not a mean of scene FIDs), per-image
means weighted by views, the scene list, SLURM options, and result folders keyed by config."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from datamodules.files.image_io import save_image
from difix3d.dataset.command import run_folder
from difix3d.dataset.scenes import SceneListError, list_scenes
from difix3d.dataset.table import build_table, markdown_table
from lightning_modules.scene.fid import fid_over_files


class PooledColour(nn.Module):
    """A stand-in FID feature extractor (no Inception weights offline): per-channel mean and std."""

    num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1).double()


def _images(colour: tuple[float, float, float], n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.tensor(colour).view(3, 1, 1) + 0.15 * torch.rand(3, 16, 16, generator=g)).clamp(0, 1) for _ in range(n)]


def _scene(root: Path, name: str, targets: list[torch.Tensor], renders: list[torch.Tensor], psnr: float) -> dict:
    """A table job's result.json for one scene with one row, its views saved as the evaluator does."""
    views = root / name / "rows" / "table_3dgs" / "test_views"
    names = [f"v{i}" for i in range(len(targets))]
    for n, t, r in zip(names, targets, renders):
        save_image(t, views / "target" / f"{n}.png")
        save_image(r, views / "render" / f"{n}.png")
    per_view = [{"name": n, "psnr": psnr, "ssim": 0.5} for n in names]
    return {"scene": name, "rows": {"3DGS": {"metrics": {"psnr": psnr, "ssim": 0.5}, "per_view": per_view,
                                             "views": str(views), "render_folder": "render"}}}


def test_dataset_fid_is_not_the_mean_of_scene_fids(tmp_path: Path) -> None:
    # Scene A renders look like scene B's targets and the reverse: each scene's FID is large,
    # while over the dataset the renders and targets have the same distribution (FID ~ 0).
    red, blue = _images((0.7, 0.1, 0.1), 6, 0), _images((0.1, 0.1, 0.7), 6, 1)
    a = _scene(tmp_path, "a", red, blue, 10.0)
    b = _scene(tmp_path, "b", blue, red, 20.0)
    table = build_table([a, b], fid_feature=PooledColour())
    dataset_fid = table["rows"]["3DGS"]["all_views"]["fid"]
    scene_fids = []
    for doc in (a, b):
        views = Path(doc["rows"]["3DGS"]["views"])
        real, fake = sorted((views / "target").glob("*.png")), sorted((views / "render").glob("*.png"))
        scene_fids.append(fid_over_files(real, {"x": fake}, PooledColour())["x"])
    assert min(scene_fids) > 0.5  # (0.6 colour shift)^2 per channel, twice
    assert abs(dataset_fid) < 1e-6 * max(scene_fids) + 1e-8
    assert abs(dataset_fid - sum(scene_fids) / 2) > 0.5


def test_all_views_weights_scenes_by_views_and_over_scenes_does_not(tmp_path: Path) -> None:
    grey = _images((0.5, 0.5, 0.5), 4, 2)
    a = _scene(tmp_path, "a", grey[:1], grey[:1], 10.0)
    b = _scene(tmp_path, "b", grey[1:], grey[1:], 20.0)
    row = build_table([a, b], fid_feature=PooledColour())["rows"]["3DGS"]
    assert row["all_views"]["psnr"] == pytest.approx(17.5) and row["all_views"]["views"] == 4
    assert row["over_scenes"]["psnr"]["mean"] == pytest.approx(15.0)
    assert row["over_scenes"]["psnr"]["std"] == pytest.approx(7.0710678)
    doc = {"title": "t", "config_hash": "abc", "job_kind": "table", "failed": [{"scene": "c", "error": "killed",
           "stderr": "/x/log.err"}], "table": build_table([a, b], fid_feature=PooledColour())}
    md = markdown_table(doc)
    assert "| 3DGS | 17.50 | 0.5000 |" in md and "15.00 ± 7.07" in md and "- c: killed (log: /x/log.err)" in md


def test_scene_lists(tmp_path: Path) -> None:
    for name in ("b", "a", ".hidden"):
        (tmp_path / "data" / name / "nerfstudio").mkdir(parents=True)
    assert [s.id for s in list_scenes(str(tmp_path / "data"))] == ["a", "b"]
    scenes = list_scenes(str(tmp_path / "data"), subdir="nerfstudio", only=["b"])
    assert [(s.id, s.path) for s in scenes] == [("b", tmp_path / "data" / "b" / "nerfstudio")]
    assert [s.id for s in list_scenes(str(tmp_path / "data" / "[b]"))] == ["b"]
    listing = tmp_path / "data" / "scenes.txt"
    listing.write_text("# held-out scenes\nb\n\n" + str(tmp_path / "data" / "a") + "  # absolute\n")
    assert [s.id for s in list_scenes(str(listing))] == ["b", "a"]
    (tmp_path / "other" / "a").mkdir(parents=True)
    listing.write_text(f"a\n{tmp_path / 'other' / 'a'}\n")
    with pytest.raises(SceneListError, match="two scenes are named 'a'"):
        list_scenes(str(listing))
    with pytest.raises(SceneListError, match=r"do not exist: \[.*colmap"):
        list_scenes(str(tmp_path / "data"), subdir="colmap")
    with pytest.raises(SceneListError, match=r"scenes \['z'\] are not in the list"):
        list_scenes(str(tmp_path / "data"), only=["z"])


def test_result_folders_are_keyed_by_the_resolved_config(tmp_path: Path) -> None:
    spec = {"table": {"config": "/c.yaml", "rows": ["plain"]}}
    one, h1 = run_folder(tmp_path, "table", spec, "trainer:\n  max_steps: 10\n")
    again, h2 = run_folder(tmp_path, "table", json.loads(json.dumps(spec)), "trainer:\n  max_steps: 10\n")
    other, h3 = run_folder(tmp_path, "table", spec, "trainer:\n  max_steps: 20\n")
    rows, h4 = run_folder(tmp_path, "table", {"table": {"config": "/c.yaml", "rows": ["plain", "progressive"]}},
                          "trainer:\n  max_steps: 10\n")
    assert one == again and h1 == h2 and len({h1, h3, h4}) == 3 and one.name == f"table-{h1}"


def test_slurm_options_reach_the_sbatch_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SLURM here: a stand-in `srun` on PATH lets submitit build its SLURM executor, and the
    batch file it would submit is checked."""
    from difix3d.dataset.engine import EngineOptions, _executor

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    options = EngineOptions(cluster="slurm", max_parallel=8, gpus_per_job=1, cpus_per_job=6, mem_gb=48, timeout_min=300,
                            partition="gpu", options={"slurm_account": "proj"})
    executor = _executor(options, tmp_path / "submitit", "difix3d-table")
    text = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=6", "--mem=48GB", "--time=300",
                 "--account=proj", "--job-name=difix3d-table"):
        assert f"#SBATCH {line}\n" in text, line
    assert executor._executor.parameters["array_parallelism"] == 8
