"""The procedural demo scene: files, determinism, atomic creation, and that it reads back."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import datamodules.procedural.scene as procedural
from datamodules.files.image_io import load_image
from datamodules.procedural.scene import ProceduralScene, first_hit, is_complete, main, make_procedural_scene
from datamodules.readers.read_scene import read_scene


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_procedural_scene(tmp_path_factory.mktemp("proc") / "scene", num_views=8, size=64, seed=0)


def test_layout_and_reader(scene_dir: Path) -> None:
    doc = json.loads((scene_dir / "transforms.json").read_text())
    assert doc["procedural"] == {"num_views": 8, "size": 64, "seed": 0, "version": procedural.VERSION}
    assert len(doc["frames"]) == 8 and doc["ply_file_path"] == "sparse_pc.ply"
    scene = read_scene(scene_dir)
    assert scene.format == "nerfstudio" and len(scene) == 8
    assert scene.cameras.width.tolist() == [64] * 8 and scene.cameras.height.tolist() == [64] * 8
    assert scene.points is not None and scene.points.shape[0] > 1000
    image = load_image(scene.image_paths[0])
    assert image.shape == (3, 64, 64)
    # textured: many distinct colours, not a flat image
    assert image.std() > 0.1 and len(torch.unique((image * 255).round().reshape(3, -1), dim=1).T) > 100
    # the scene centre is in front of every camera
    uv, z = read_scene(scene_dir, normalize=False).cameras.project(torch.tensor([[0.0, 0.0, 0.3]]))
    assert (z > 0).all() and ((uv - 32).abs() < 1).all()


def test_points_agree_with_images(scene_dir: Path) -> None:
    """Surface points a camera sees have the colour of the pixel they project to."""
    scene = read_scene(scene_dir, normalize=False)
    images = torch.stack([load_image(p) for p in scene.image_paths])
    uv, z = scene.cameras.project(scene.points)
    inside = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < 64) & (uv[..., 1] >= 0) & (uv[..., 1] < 64)
    cam, pt = torch.nonzero(inside, as_tuple=True)
    # visible = nothing closer along the ray from the camera centre (ray-cast the geometry)
    origin = scene.cameras.centers.double()[cam]
    to_point = scene.points.double()[pt] - origin
    dist = to_point.norm(dim=-1)
    t, *_ = first_hit(origin, to_point / dist[:, None], ProceduralScene.from_seed(0))
    visible = (t - dist).abs() < 1e-3
    assert visible.sum() > 400
    px = uv[cam, pt].floor().long()[visible]
    pixel = images[cam[visible], :, px[:, 1], px[:, 0]]
    err = (pixel - scene.point_colors[pt[visible]]).abs().mean(-1)
    # pixels straddling texture edges average two colours; the rest match exactly
    assert torch.median(err) < 0.03 and (err < 0.15).float().mean() > 0.75


def test_deterministic_by_seed(tmp_path: Path, scene_dir: Path) -> None:
    again = make_procedural_scene(tmp_path / "again", num_views=8, size=64, seed=0)
    other = make_procedural_scene(tmp_path / "other", num_views=8, size=64, seed=1)
    for name in ("images/frame_00000.png", "sparse_pc.ply"):
        assert (again / name).read_bytes() == (scene_dir / name).read_bytes()
        assert (other / name).read_bytes() != (scene_dir / name).read_bytes()


def test_existing_scene_is_reused_and_partial_folders_are_not_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = make_procedural_scene(tmp_path / "s", num_views=3, size=16, seed=0)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scene should not be written again")

    monkeypatch.setattr(procedural, "_write_scene", boom)
    assert make_procedural_scene(out, num_views=3, size=16, seed=0) == out
    with pytest.raises(ValueError, match="already holds a different scene"):
        make_procedural_scene(out, num_views=4, size=16, seed=0)
    monkeypatch.undo()

    # A crash while writing leaves nothing at the destination (and no temp folder behind).
    def crash(folder: Path, *args: object) -> None:
        (folder / "images").mkdir()
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(procedural, "_write_scene", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_procedural_scene(tmp_path / "crashed", num_views=3, size=16)
    assert not (tmp_path / "crashed").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".crashed")]
    monkeypatch.undo()

    half = tmp_path / "half"
    (half / "images").mkdir(parents=True)
    assert not is_complete(half)
    with pytest.raises(ValueError, match="not a procedural scene"):
        make_procedural_scene(half, num_views=3, size=16)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert is_complete(make_procedural_scene(empty, num_views=3, size=16))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(tmp_path / "cli"), "--num-views", "2", "--size", "12", "--num-points", "100"])
    assert "2 views" in capsys.readouterr().out
    scene = read_scene(tmp_path / "cli", test_every=0)
    assert len(scene) == 2 and scene.cameras.width[0] == 12 and len(scene.points) <= 100


def test_plain_background_scene(tmp_path: Path, scene_dir: Path) -> None:
    """background=(r, g, b): the same objects alone on that colour, no ground or dome points."""
    white = make_procedural_scene(tmp_path / "white", num_views=8, size=64, seed=0, background=(1.0, 1.0, 1.0))
    doc = json.loads((white / "transforms.json").read_text())
    assert doc["procedural"]["background"] == [1.0, 1.0, 1.0]
    scene = read_scene(white, normalize=False)
    image, dome_image = load_image(scene.image_paths[0]), load_image(read_scene(scene_dir).image_paths[0])
    is_white = (image > 0.999).all(dim=0)
    # the top rows see past the objects: white here, the dome there; the objects are the same
    assert is_white[:4].all() and not (dome_image[:, :4] > 0.999).all(dim=0).any()
    assert 0.3 < is_white.float().mean() < 0.95
    objects = ~is_white
    assert (image - dome_image).abs()[:, objects].mean() < 0.05
    # every point lies on an object: within the spheres' or boxes' bounds, none on the ground far out
    objs = ProceduralScene.from_seed(0, (1.0, 1.0, 1.0))
    near_sphere = ((scene.points.double()[:, None] - objs.sphere_centers).norm(dim=-1) < objs.sphere_radii + 1e-3).any(-1)
    near_box = ((scene.points.double()[:, None] - objs.box_centers).abs() < objs.box_half + 1e-3).all(-1).any(-1)
    assert (near_sphere | near_box).all() and len(scene.points) > 1000
    # a cached dome scene is not taken for a white one, and a bad colour is refused up front
    with pytest.raises(ValueError, match="already holds a different scene"):
        make_procedural_scene(scene_dir, num_views=8, size=64, seed=0, background=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="background must be an RGB triple"):
        make_procedural_scene(tmp_path / "bad", num_views=8, size=64, background=(1.0, 2.0, 1.0))
    assert not (tmp_path / "bad").exists()
