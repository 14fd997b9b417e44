"""Scene readers: conventions, splits, normalisation, distortion, shared scenes (bad input: test_reader_errors.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.cameras.cameras import Cameras
from datamodules.readers.colmap import (
    read_colmap_model,
    write_colmap_binary,
    write_colmap_text,
)
from datamodules.cameras.distortion import distort_normalized, undistort_image, undistort_points
from datamodules.files.image_io import save_image
from datamodules.readers.read_scene import read_scene
from datamodules.readers.scene_data import SceneFormatError
from helpers.scene_writers import Rig, make_rig, write_blender, write_colmap, write_llff, write_nerfstudio


def _same_cameras(a: Cameras, b: Cameras, atol: float = 1e-4) -> None:
    assert torch.allclose(a.world_to_camera, b.world_to_camera, atol=atol)
    assert torch.allclose(a.K, b.K, atol=atol)
    assert torch.equal(a.width, b.width) and torch.equal(a.height, b.height)


# ---------------------------------------------------------------------------- conventions
def test_every_format_gives_the_same_cameras(rig: Rig, tmp_path: Path) -> None:
    """One rig written in five ways: a known 3D point lands on the same pixel in all."""
    expected = Cameras.from_c2w(rig.c2w, rig.K, rig.width, rig.height)
    scenes = {
        "colmap_bin": read_scene(write_colmap(rig, tmp_path / "cb"), normalize=False),
        "colmap_txt": read_scene(write_colmap(rig, tmp_path / "ct", binary=False, model="SIMPLE_PINHOLE", per_image_camera=False), normalize=False),
        "blender": read_scene(write_blender(rig, tmp_path / "bl"), normalize=False),
        "nerfstudio": read_scene(write_nerfstudio(rig, tmp_path / "ns"), normalize=False),
        "llff": read_scene(write_llff(rig, tmp_path / "ll"), normalize=False),
    }
    assert [s.format for s in scenes.values()] == ["colmap", "colmap", "blender", "nerfstudio", "llff"]
    point = torch.tensor([[0.3, -0.2, 0.25]])
    uv_expected, z_expected = expected.project(point)
    assert (z_expected > 0).all() and (uv_expected[..., 0] > 0).all() and (uv_expected[..., 0] < rig.width).all()
    for name, scene in scenes.items():
        _same_cameras(scene.cameras, expected)
        uv, z = scene.cameras.project(point)
        assert torch.allclose(uv, uv_expected, atol=1e-3), name
        assert torch.allclose(z, z_expected, atol=1e-4), name
        assert torch.equal(scene.transform, torch.eye(4, dtype=torch.float64)) and scene.scale == 1.0
    # Points come along where the format has them, in the same world.
    assert torch.allclose(scenes["colmap_bin"].points.double(), rig.points, atol=1e-6)
    assert torch.allclose(scenes["colmap_txt"].point_colors, rig.colors, atol=1 / 255)
    assert torch.allclose(scenes["nerfstudio"].points.double(), rig.points, atol=1e-6)
    assert scenes["blender"].points is None and scenes["blender"].alpha_background
    assert scenes["blender"].split["train"] == [0, 1, 2] and scenes["blender"].split["test"] == [3, 4, 5]


def test_colmap_binary_and_text_round_trip(rig: Rig, tmp_path: Path) -> None:
    write_colmap(rig, tmp_path / "a")
    cams, images, points = read_colmap_model(tmp_path / "a" / "sparse" / "0")
    write_colmap_text(tmp_path / "t", cams.values(), images.values(), points)
    cams_t, images_t, points_t = read_colmap_model(tmp_path / "t")
    write_colmap_binary(tmp_path / "b", cams_t.values(), images_t.values(), points_t)
    cams_b, images_b, points_b = read_colmap_model(tmp_path / "b")
    assert cams_b == cams_t == cams
    for i in images:
        for other in (images_t[i], images_b[i]):
            assert other.name == images[i].name and other.camera_id == images[i].camera_id
            np.testing.assert_array_equal(other.qvec, images[i].qvec)
            np.testing.assert_array_equal(other.xys, images[i].xys)
            np.testing.assert_array_equal(other.point3d_ids, images[i].point3d_ids)
    np.testing.assert_array_equal(points_b.xyz, points.xyz)
    np.testing.assert_array_equal(points_b.rgb, points.rgb)
    np.testing.assert_array_equal(points_b.tracks[0], [[1, 0]])
    assert len(points_b.tracks[1]) == 0


def test_nerfstudio_variants(rig: Rig, tmp_path: Path) -> None:
    base = read_scene(write_nerfstudio(rig, tmp_path / "g"), normalize=False)
    per_frame = read_scene(write_nerfstudio(rig, tmp_path / "p", per_frame=True), normalize=False)
    _same_cameras(per_frame.cameras, base.cameras)
    # instant-ngp style: only camera_angle_x, no w/h (read from the images)
    ngp = write_nerfstudio(rig, tmp_path / "n", ply=False)
    doc = json.loads((ngp / "transforms.json").read_text())
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        doc.pop(key)
    doc["camera_angle_x"] = 2 * math.atan(rig.width / (2 * rig.focal))
    (ngp / "transforms.json").write_text(json.dumps(doc))
    s = read_scene(ngp, normalize=False)
    _same_cameras(s.cameras, base.cameras)
    assert s.points is None
    # applied_transform goes into SceneData.transform (original = file world here mapped back)
    A = [[0.0, 1.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 2.0]]
    s = read_scene(write_nerfstudio(rig, tmp_path / "a", extra={"applied_transform": A}), normalize=False)
    assert torch.allclose(s.transform[:3], torch.tensor(A, dtype=torch.float64))
    _same_cameras(s.cameras, base.cameras)  # poses are used as they are in the file


# ---------------------------------------------------------------------------- normalisation
def test_normalisation_centres_scales_and_keeps_projections(rig: Rig, tmp_path: Path) -> None:
    root = write_colmap(rig, tmp_path / "c")
    raw = read_scene(root, normalize=False)
    norm = read_scene(root)
    centers = norm.cameras.centers.double()
    assert centers.mean(dim=0).abs().max() < 1e-5
    assert math.isclose(float((centers - centers.mean(0)).norm(dim=-1).max()), 1.0, rel_tol=1e-5)
    # transform maps original world points to the normalised world
    mapped = raw.points.double() @ norm.transform[:3, :3].T + norm.transform[:3, 3]
    assert torch.allclose(mapped.float(), norm.points, atol=1e-5)
    assert math.isclose(norm.scale, float(torch.linalg.det(norm.transform[:3, :3])) ** (1 / 3), rel_tol=1e-9)
    # projections are unchanged by normalisation
    uv_raw, _ = raw.cameras.project(raw.points)
    uv_norm, _ = norm.cameras.project(norm.points)
    assert torch.allclose(uv_raw, uv_norm, atol=1e-3)
    # rotations stay orthonormal; back to the original world
    R = norm.cameras.camera_to_world[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand_as(R), atol=1e-5)
    back = norm.to_original_world(norm.cameras.camera_to_world)
    assert torch.allclose(back, raw.cameras.camera_to_world, atol=1e-4)
    up = read_scene(root, align_up=True)
    mean_up = -up.cameras.camera_to_world[:, :3, 1].mean(0)
    assert torch.allclose(mean_up / mean_up.norm(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)


# ---------------------------------------------------------------------------- splits
def test_splits(rig: Rig, tmp_path: Path) -> None:
    root = write_llff(make_rig(n=17), tmp_path / "l")
    s = read_scene(root)
    assert s.split["test"] == [0, 8, 16] and len(s.split["train"]) == 14
    assert read_scene(root, test_every=0).split == {"train": list(range(17)), "test": []}
    sparse = read_scene(root, train_every=3)
    assert sparse.split["train"] == [1, 4, 7, 11, 14] and sparse.split["test"] == [0, 8, 16]
    assert read_scene(root, train_every=2, max_train_views=3).split["train"] == [1, 3, 5]
    assert read_scene(root, train_indices=[2, 9]).split["train"] == [2, 9]
    with pytest.raises(SceneFormatError, match=r"train_indices \[8\]"):
        read_scene(root, train_indices=[2, 8])
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["IMG_0001.png", "IMG_0002", 5], "test": ["IMG_0000"]}))
    s = read_scene(root, split_file=str(split))
    assert s.split["train"] == [1, 2, 5] and s.split["test"] == [0]
    split.write_text(json.dumps({"train": ["nope"], "test": []}))
    with pytest.raises(SceneFormatError, match=r"split\.json.*'nope'"):
        read_scene(root, split_file=str(split))
    split.write_text(json.dumps({"train": [1], "test": [1]}))
    with pytest.raises(SceneFormatError, match="both train and test"):
        read_scene(root, split_file=str(split))
    # Blender keeps its own split; test_every does not apply
    b = read_scene(write_blender(rig, tmp_path / "b"), test_every=2, max_train_views=2)
    assert b.split["train"] == [0, 1] and b.split["test"] == [3, 4, 5]


# ---------------------------------------------------------------------------- downscale
def test_downscale_uses_folders_or_resizes(rig: Rig, tmp_path: Path) -> None:
    root = write_colmap(rig, tmp_path / "c")
    half = read_scene(root, downscale=2)
    assert half.cameras.width.tolist() == [20] * len(rig) and half.cameras.height.tolist() == [15] * len(rig)
    assert torch.allclose(half.cameras.K[0, :2], torch.tensor([[17.5, 0, 10], [0, 17.5, 7.5]]))
    assert half.image_paths[0].parent.name == "images"  # no images_2: resized on load
    for i in range(len(rig)):
        save_image(rig.images[i][:, ::2, ::2], root / "images_2" / f"img_{i:02d}.png")
    folder = read_scene(root, downscale=2)
    assert folder.image_paths[0].parent.name == "images_2"
    _same_cameras(folder.cameras, half.cameras)
    quarter = read_scene(root, downscale=4)  # from images_2, resized by 2 more
    assert quarter.image_paths[0].parent.name == "images_2" and quarter.cameras.width[0] == 10
    # LLFF: hwf at full resolution, only images_4 on disk
    ll = write_llff(rig, tmp_path / "l", folder="images_4", scale=4)
    s = read_scene(ll, downscale=4, normalize=False)
    _same_cameras(s.cameras, Cameras.from_c2w(rig.c2w, rig.K, rig.width, rig.height))
    with pytest.raises(SceneFormatError, match=r"no image folder for downscale 1.*images_4"):
        read_scene(ll)


# ---------------------------------------------------------------------------- distortion
def test_undistortion_inverts_the_lens_model() -> None:
    params = torch.tensor([0.12, -0.03, 0.0, 0.0, 0.004, -0.002], dtype=torch.float64)
    xy = torch.rand(100, 2, dtype=torch.float64) - 0.5
    assert torch.allclose(undistort_points(distort_normalized(xy, params) * 30 + 20, torch.tensor([[30.0, 0, 20], [0, 30, 20], [0, 0, 1]]), params), xy * 30 + 20, atol=1e-6)
    # A smooth pattern seen through the lens, then undistorted, matches the pinhole view.
    K = torch.tensor([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]], dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(48, dtype=torch.float64) + 0.5, torch.arange(64, dtype=torch.float64) + 0.5, indexing="ij")
    pix = torch.stack([u, v], dim=-1).reshape(-1, 2)

    def pattern(p: torch.Tensor) -> torch.Tensor:  # p: undistorted pixels
        return torch.stack([torch.sin(p[:, 0] / 5), torch.cos(p[:, 1] / 4), torch.sin((p[:, 0] + p[:, 1]) / 7)], 0) * 0.4 + 0.5

    pinhole = pattern(pix).reshape(3, 48, 64)
    distorted = pattern(undistort_points(pix, K, params)).reshape(3, 48, 64)  # what the lens recorded
    out, valid = undistort_image(distorted.float(), K, params)
    inner = valid[0].bool()
    inner[:3], inner[-3:], inner[:, :3], inner[:, -3:] = False, False, False, False
    assert (out - pinhole.float()).abs()[:, inner].max() < 0.03
    assert (out - distorted.float()).abs()[:, inner].max() > 0.1  # it did change the image
    assert valid.min() == 0.0  # pincushion: corners the lens never saw


def test_colmap_distorted_models_are_undistorted_or_refused(rig: Rig, tmp_path: Path) -> None:
    f, cx, cy = rig.focal, rig.width / 2, rig.height / 2
    s = read_scene(write_colmap(rig, tmp_path / "o", model="OPENCV", params=[f, f, cx, cy, 0.1, 0.01, 0.001, 0.002]))
    assert torch.allclose(s.distortion[0], torch.tensor([0.1, 0.01, 0.0, 0.0, 0.001, 0.002]))
    s = read_scene(write_colmap(rig, tmp_path / "sr", model="SIMPLE_RADIAL", params=[f, cx, cy, -0.05], binary=False))
    assert torch.allclose(s.distortion[:, 0], torch.full((len(rig),), -0.05))
    s = read_scene(write_colmap(rig, tmp_path / "r", model="RADIAL", params=[f, cx, cy, 0.0, 0.0]))
    assert s.distortion is None  # all-zero coefficients: a pinhole camera
    with pytest.raises(SceneFormatError, match=r"cameras\.bin.*OPENCV_FISHEYE.*not supported"):
        read_scene(write_colmap(rig, tmp_path / "fe", model="OPENCV_FISHEYE", params=[f, f, cx, cy, 0.1, 0, 0, 0]))


# ---------------------------------------------------------------------------- shared scenes
def test_shared_scenes(shared_data: Path) -> None:
    lego = read_scene(shared_data / "lego_blender_400")
    assert lego.format == "blender"
    assert len(lego.split["train"]) == 100 and len(lego.split["test"]) == 200 and len(lego.split["val"]) == 100
    assert set(lego.cameras.width.tolist()) == {400} and set(lego.cameras.height.tolist()) == {400}
    # the object at the world origin is in front of every camera, near the image centre
    uv, z = read_scene(shared_data / "lego_blender_400", normalize=False).cameras.project(torch.zeros(1, 3))
    assert (z > 0).all() and (uv - 200).abs().max() < 5

    statuette = read_scene(shared_data / "colmap_statuette", format="colmap")
    assert len(statuette) == 23 and statuette.distortion is None
    assert set(statuette.cameras.width.tolist()) == {1000}
    # the data README says 657-661; the model and the JPGs say 656-662
    heights = statuette.cameras.height
    assert int(heights.min()) >= 656 and int(heights.max()) <= 662 and len(set(heights.tolist())) > 1
    assert statuette.points.shape == (1443, 3)
    # each point reprojects onto its recorded 2D observation (mean error ~0.3 px)
    _, images, points = read_colmap_model(shared_data / "colmap_statuette" / "sparse" / "0")
    order = {im.name: i for i, im in enumerate(sorted(images.values(), key=lambda im: im.name))}
    uv, z = statuette.cameras.project(statuette.points)
    errors = []
    for p, track in enumerate(points.tracks):
        for image_id, point2d in track.tolist():
            im = images[image_id]
            errors.append(float((uv[order[im.name], p] - torch.from_numpy(im.xys[point2d]).float()).norm()))
            assert z[order[im.name], p] > 0
    errors_t = torch.tensor(errors)
    assert errors_t.mean() < 1.0 and torch.quantile(errors_t, 0.99) < 5.0
    # observations lie inside the images
    idx = torch.tensor([[order[images[i].name], p] for p, t in enumerate(points.tracks) for i, _ in t.tolist()])
    obs = uv[idx[:, 0], idx[:, 1]]
    w, h = statuette.cameras.width[idx[:, 0]], statuette.cameras.height[idx[:, 0]]
    assert ((obs[:, 0] > -1) & (obs[:, 0] < w + 1) & (obs[:, 1] > -1) & (obs[:, 1] < h + 1)).float().mean() > 0.99

    fern = read_scene(shared_data / "fern_llff", downscale=8)
    assert len(fern) == 20 and fern.split["test"] == [0, 8, 16]
    assert set(fern.cameras.width.tolist()) == {504} and set(fern.cameras.height.tolist()) == {378}
    assert fern.cameras.K[0, 0, 0] == pytest.approx(3260.5 / 8, rel=1e-3)
    # forward-facing: all cameras look roughly the same way
    fwd = fern.cameras.camera_to_world[:, :3, 2]
    assert (fwd @ fwd.mean(0)).min() > 0.9


def test_llff_without_sfm_points_seeds_points_in_the_frustums() -> None:
    import math

    from datamodules.cameras.poses import look_at
    from datamodules.readers.llff import frustum_points

    c2w = look_at(torch.tensor([[0.0, 0.0, -3.0], [0.5, 0.0, -3.0]]), torch.zeros(3))
    K = torch.tensor([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]]).expand(2, 3, 3).double()
    size_w, size_h = torch.tensor([64, 64]), torch.tensor([48, 48])
    bounds = torch.tensor([[1.0, 5.0], [2.0, 4.0]]).double()
    pts = frustum_points(c2w.double(), K, size_w, size_h, bounds, per_camera=500)
    assert pts.shape == (1000, 3)
    # Camera i's points lie in its own image and between its own bounds.
    for i in range(2):
        own = pts[i * 500 : (i + 1) * 500]
        w2c = torch.linalg.inv(c2w[i].double())
        cam = own @ w2c[:3, :3].T + w2c[:3, 3]
        uv = cam[:, :2] / cam[:, 2:] * K[i, 0, 0] + K[i, :2, 2]
        assert (cam[:, 2] >= bounds[i, 0] - 1e-9).all() and (cam[:, 2] <= bounds[i, 1] + 1e-9).all()
        assert (uv[:, 0] >= 0).all() and (uv[:, 0] <= 64).all() and (uv[:, 1] >= 0).all() and (uv[:, 1] <= 48).all()
    assert not math.isclose(float(pts[:500, 2].std()), 0.0)
