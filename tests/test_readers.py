"""Scene readers: conventions, splits, normalisation, distortion, bad input, shared scenes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.cameras import Cameras
from datamodules.colmap import (
    read_colmap_model,
    write_colmap_binary,
    write_colmap_text,
)
from datamodules.distortion import distort_normalized, undistort_image, undistort_points
from datamodules.image_io import save_image
from datamodules.point_ply import PlyFormatError, read_point_ply, write_point_ply
from datamodules.read_scene import detect_format, read_scene
from datamodules.scene_data import SceneFormatError
from scene_writers import Rig, make_rig, write_blender, write_colmap, write_llff, write_nerfstudio


@pytest.fixture(scope="module")
def rig() -> Rig:
    return make_rig()


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


# ---------------------------------------------------------------------------- bad input
def test_colmap_bad_input(rig: Rig, tmp_path: Path) -> None:
    root = write_colmap(rig, tmp_path / "c")
    model = root / "sparse" / "0"
    data = (model / "images.bin").read_bytes()
    (model / "images.bin").write_bytes(data[:-30])
    with pytest.raises(SceneFormatError, match=rf"images\.bin: file truncated at byte {len(data) - 30}"):
        read_scene(root)
    (model / "images.bin").write_bytes(data)
    cams = (model / "cameras.bin").read_bytes()
    bad = bytearray(cams)
    bad[8 + 4 : 8 + 8] = (99).to_bytes(4, "little")  # model id of the first camera
    (model / "cameras.bin").write_bytes(bytes(bad))
    with pytest.raises(SceneFormatError, match=r"cameras\.bin.*unknown camera model id 99"):
        read_scene(root)
    (model / "cameras.bin").write_bytes(cams)
    (root / "images" / "img_03.png").unlink()
    with pytest.raises(SceneFormatError, match=r"images\.bin.*img_03\.png.*missing"):
        read_scene(root)

    txt = write_colmap(rig, tmp_path / "t", binary=False)
    cam_txt = txt / "sparse" / "0" / "cameras.txt"
    cam_txt.write_text(cam_txt.read_text().replace("PINHOLE", "FANCY_LENS", 1))
    with pytest.raises(SceneFormatError, match=r"cameras\.txt: line \d+: unknown camera model 'FANCY_LENS'"):
        read_scene(txt)
    nan = write_colmap(make_rig(), tmp_path / "n", binary=False)
    img_txt = nan / "sparse" / "0" / "images.txt"
    lines = img_txt.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    parts = lines[first].split()
    parts[5] = "nan"
    lines[first] = " ".join(parts)
    img_txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(SceneFormatError, match=r"images\.txt: pose of image 'img_00\.png' is not finite"):
        read_scene(nan)


def test_other_formats_bad_input(rig: Rig, tmp_path: Path) -> None:
    ll = write_llff(rig, tmp_path / "l")
    (ll / "images" / "IMG_0002.png").unlink()
    with pytest.raises(SceneFormatError, match=r"poses_bounds\.npy: 6 poses but 5 images"):
        read_scene(ll)
    ll2 = write_llff(rig, tmp_path / "l2")
    arr = np.load(ll2 / "poses_bounds.npy")
    arr[2, 3] = np.inf
    np.save(ll2 / "poses_bounds.npy", arr)
    with pytest.raises(SceneFormatError, match=r"poses_bounds\.npy: row 2 .*IMG_0002.*non-finite"):
        read_scene(ll2)

    ns = write_nerfstudio(rig, tmp_path / "n")
    doc = json.loads((ns / "transforms.json").read_text())
    doc["frames"][1]["transform_matrix"][0][3] = float("nan")
    (ns / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneFormatError, match=r"transforms\.json: frame 1: transform_matrix is not finite"):
        read_scene(ns)
    doc["frames"][1]["transform_matrix"][0][3] = 0.0
    doc["camera_model"] = "PINHOLE"
    doc["k1"] = 0.1
    (ns / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneFormatError, match=r"PINHOLE but distortion parameters are non-zero"):
        read_scene(ns)
    doc["camera_model"] = "OPENCV_FISHEYE"
    (ns / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneFormatError, match=r"transforms\.json: frame 0: camera_model 'OPENCV_FISHEYE' is not supported"):
        read_scene(ns)
    doc["camera_model"] = "OPENCV"
    (ns / "transforms.json").write_text(json.dumps(doc))
    assert read_scene(ns).distortion[0, 0] == pytest.approx(0.1)  # OPENCV + k1: undistorted on load
    (ns / "images" / "frame_004.png").unlink()
    with pytest.raises(SceneFormatError, match=r"transforms\.json: image 'images/frame_004\.png' is missing"):
        read_scene(ns)
    with pytest.raises(SceneFormatError, match=r"transforms\.json: transforms file is missing"):
        read_scene(tmp_path / "l", format="nerfstudio")

    bl = write_blender(rig, tmp_path / "b")
    (bl / "transforms_train.json").unlink()
    with pytest.raises(SceneFormatError, match=r"transforms_train\.json: transforms file is missing"):
        read_scene(bl, format="blender")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SceneFormatError, match="cannot tell the scene format"):
        detect_format(empty)
    with pytest.raises(SceneFormatError, match="scene folder not found"):
        read_scene(tmp_path / "absent")


def test_point_ply_round_trip_and_errors(tmp_path: Path) -> None:
    pts = torch.randn(50, 3)
    cols = torch.rand(50, 3)
    write_point_ply(tmp_path / "p.ply", pts, cols)
    p, c = read_point_ply(tmp_path / "p.ply")
    assert torch.allclose(p, pts) and torch.allclose(c, cols, atol=1 / 255)
    ascii_ply = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nproperty uint8 red\nproperty uint8 green\nproperty uint8 blue\nend_header\n0 1 2 255 0 0\n3 4 5 0 0 255\n"
    (tmp_path / "a.ply").write_text(ascii_ply)
    p, c = read_point_ply(tmp_path / "a.ply")
    assert p.tolist() == [[0, 1, 2], [3, 4, 5]] and c.tolist() == [[1, 0, 0], [0, 0, 1]]
    data = (tmp_path / "p.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(data[:-10])
    with pytest.raises(PlyFormatError, match=r"t\.ply: truncated"):
        read_point_ply(tmp_path / "t.ply")


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

    from datamodules.cameras import look_at
    from datamodules.llff import frustum_points

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


# ---------------------------------------------------------------------------- bad downscale
@pytest.mark.parametrize("fmt", ["colmap", "blender", "nerfstudio", "llff"])
def test_negative_downscale_fails_in_every_reader(rig: Rig, tmp_path: Path, fmt: str) -> None:
    writer = {"colmap": write_colmap, "blender": write_blender, "nerfstudio": write_nerfstudio, "llff": write_llff}[fmt]
    root = writer(rig, tmp_path / fmt)
    with pytest.raises(SceneFormatError, match="downscale must be an integer >= 1"):
        read_scene(root, downscale=-2)


def test_downscale_too_small_to_evaluate_names_downscale(rig: Rig, tmp_path: Path) -> None:
    from datamodules.scene_datamodule import SceneDataModule

    root = write_nerfstudio(rig, tmp_path / "ns")
    dm = SceneDataModule(str(root), downscale=8)  # 40x30 -> 5x4 pixels
    with pytest.raises(SceneFormatError, match=r"downscale 8 leaves 6 image\(s\) smaller than 11x11"):
        dm.setup("fit")
