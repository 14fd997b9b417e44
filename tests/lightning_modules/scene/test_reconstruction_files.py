"""Reconstructions made elsewhere: every layout read back exactly, bad files named, worlds mapped."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.cameras.cameras import Cameras
from datamodules.scene.scene_setup import SceneSetup
from helpers.fakes import orbit_cameras
from helpers.scene_writers import BAD_PLY_HEADERS, write_bad_ply
from helpers.gaussian_files import (write_dataparser_transforms, write_gsplat_checkpoint, write_gsplat_ply,
                                    write_inria_ply, write_nerfstudio_ply, write_splatfacto_checkpoint)
from lightning_modules.scene.gaussians.ply import read_ply, write_ply
from lightning_modules.scene.gaussians.reconstruction import GaussiansFile, read_gaussians_file
from lightning_modules.scene.gaussians.similarity import transform_splats
from lightning_modules.scene.gaussians.splats import SPLAT_NAMES, Gaussians
from lightning_modules.scene.gaussians.world_units import (check_against_cameras, file_to_normalised,
                                                           gsplat_parser_transform, splats_in_scene)


def _splats(n: int = 50, degree: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = Gaussians.random(n, 0.5, sh_degree=degree, generator=torch.Generator().manual_seed(seed)).raw()
    g["shN"] = torch.randn(g["shN"].shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.1
    return g


WRITERS = {
    "INRIA-layout .ply": lambda p, s: write_inria_ply(p / "point_cloud.ply", s),
    "this project's .ply": lambda p, s: write_ply(p / "mine.ply", s),
    "gsplat export_splats .ply": lambda p, s: write_gsplat_ply(p / "gsplat.ply", s),
    "nerfstudio ns-export .ply": lambda p, s: write_nerfstudio_ply(p / "splat.ply", s),
    "gsplat simple_trainer checkpoint (step 29999)": lambda p, s: write_gsplat_checkpoint(p / "ckpt_29999_rank0.pt", s),
    "gsplat 1.0 checkpoint": lambda p, s: write_gsplat_checkpoint(p / "ckpt_6999.pt", s, 6999, means_key="means3d"),
    "nerfstudio splatfacto checkpoint (step 29999)": lambda p, s: write_splatfacto_checkpoint(p / "step.ckpt", s),
}


@pytest.mark.parametrize("layout", list(WRITERS))
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_every_layout_reads_back_the_same_gaussians(tmp_path: Path, layout: str, degree: int) -> None:
    splats = _splats(degree=degree)
    loaded = read_gaussians_file(WRITERS[layout](tmp_path, splats))
    assert loaded.sh_degree == degree and len(loaded) == 50
    for name in SPLAT_NAMES:
        if name == "sh0" and degree == 0 and "splatfacto" in layout:
            continue  # logit colours at degree 0: the next test
        assert torch.equal(loaded.splats[name], splats[name].float()), name
    expected = {"this project's .ply": "INRIA-layout .ply",
                "gsplat 1.0 checkpoint": "gsplat simple_trainer checkpoint (step 6999)"}.get(layout, layout)
    assert loaded.layout == expected


def test_splatfacto_at_degree_zero_keeps_logit_colours(tmp_path: Path) -> None:
    # splatfacto with sh_degree 0 renders sigmoid(features_dc); its exporter writes RGB2SH(sigmoid(.)).
    splats = _splats(degree=0)
    loaded = read_gaussians_file(write_splatfacto_checkpoint(tmp_path / "s.ckpt", splats))
    rgb = torch.sigmoid(splats["sh0"])
    assert torch.allclose(loaded.splats["sh0"] * 0.28209479177387814 + 0.5, rgb, atol=1e-6)


def test_bad_files_are_named(tmp_path: Path) -> None:
    splats = _splats(degree=3)
    ply = write_inria_ply(tmp_path / "deg3.ply", splats)
    with pytest.raises(ValueError, match=r"deg3.ply.*SH degree 3.*asks for 1"):
        read_gaussians_file(ply, sh_degree=1)

    nan = {k: v.clone() for k, v in splats.items()}
    nan["opacities"][[4, 9]] = float("nan")
    with pytest.raises(ValueError, match=r"nan.pt: 2 of 50 Gaussians have non-finite 'opacities' \(first at row 4\)"):
        read_gaussians_file(write_gsplat_checkpoint(tmp_path / "nan.pt", nan))

    cols = tmp_path / "cols.ply"  # an RGB-byte export: no SH colours
    cols.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\n" + b"".join(
        f"property float {k}\n".encode() for k in ("x", "y", "z", "opacity", "scale_0", "scale_1", "scale_2",
                                                   "rot_0", "rot_1", "rot_2", "rot_3"))
        + b"property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
        + np.zeros(11, "<f4").tobytes() + bytes(3))
    with pytest.raises(ValueError, match=r"cols.ply lacks the Gaussian properties \['f_dc_0'.*RGB bytes"):
        read_gaussians_file(cols)

    app = tmp_path / "app.pt"  # gsplat --app_opt: features + colours, no SH
    torch.save({"step": 1, "splats": {"means": torch.zeros(2, 3), "scales": torch.zeros(2, 3), "quats": torch.ones(2, 4),
                                      "opacities": torch.zeros(2), "features": torch.zeros(2, 32),
                                      "colors": torch.zeros(2, 3)}}, app)
    with pytest.raises(ValueError, match=r"app.pt: a gsplat checkpoint trained with --app_opt"):
        read_gaussians_file(app)

    other = tmp_path / "other.pt"
    torch.save({"step": 1, "model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match=r"other.pt: no Gaussians found.*\['model', 'step'\]"):
        read_gaussians_file(other)

    shape = {k: v.clone() for k, v in splats.items()}
    shape["scales"] = shape["scales"][:, :2]
    with pytest.raises(ValueError, match=r"shape.pt: 'scales' has shape \(50, 2\), expected \(50, 3\)"):
        read_gaussians_file(write_gsplat_checkpoint(tmp_path / "shape.pt", shape))

    zero = {k: v.clone() for k, v in splats.items()}
    zero["quats"][7] = 0
    with pytest.raises(ValueError, match=r"zero.ply: 1 Gaussians have an all-zero rotation quaternion \(row 7\)"):
        read_gaussians_file(write_gsplat_ply(tmp_path / "zero.ply", zero))

    with pytest.raises(FileNotFoundError, match="missing.ply does not exist"):
        read_gaussians_file(tmp_path / "missing.ply")
    with pytest.raises(ValueError, match="units must be"):
        GaussiansFile(path="x.ply", units="metres")  # type: ignore[arg-type]


def _setup(transform: torch.Tensor, n: int = 12) -> SceneSetup:
    cams = orbit_cameras(n)
    pts = torch.randn(400, 3, generator=torch.Generator().manual_seed(3)) * torch.tensor([0.6, 0.4, 0.15])
    return SceneSetup(train_cameras=cams[list(range(0, n, 2))], scene_scale=1.1, points=pts, transform=transform,
                      all_cameras=cams)


def _similarity(scale: float, seed: int = 0) -> torch.Tensor:
    from datamodules.cameras.poses import quat_to_rotmat

    g = torch.Generator().manual_seed(seed)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = scale * quat_to_rotmat(torch.nn.functional.normalize(torch.randn(4, generator=g, dtype=torch.float64), dim=0))
    T[:3, 3] = torch.randn(3, generator=g, dtype=torch.float64)
    return T


def test_units_map_each_world_into_the_normalised_one(tmp_path: Path) -> None:
    to_ours = _similarity(0.2)  # normalised = to_ours @ original
    setup = _setup(to_ours)
    ours = _splats(200)  # Gaussians in the normalised world
    original = transform_splats(ours, torch.linalg.inv(to_ours))

    def mapped(spec: GaussiansFile) -> dict[str, torch.Tensor]:
        return transform_splats(read_gaussians_file(spec.path).splats, file_to_normalised(spec, setup))

    got = mapped(GaussiansFile(str(write_inria_ply(tmp_path / "o.ply", original)), units="original"))
    assert torch.allclose(got["means"], ours["means"], atol=1e-5) and torch.allclose(got["shN"], ours["shN"], atol=1e-4)
    got = mapped(GaussiansFile(str(write_ply(tmp_path / "n.ply", ours)), units="normalised"))
    assert torch.equal(got["means"], ours["means"].float())

    # gsplat's world: its parser's transform of the original cameras and points.
    c2w = torch.linalg.inv(to_ours) @ setup.all_cameras.camera_to_world.double()
    c2w[:, :3, :3] /= c2w[:, :3, :3].norm(dim=1, keepdim=True)
    pts = setup.points.double() @ torch.linalg.inv(to_ours)[:3, :3].T + torch.linalg.inv(to_ours)[:3, 3]
    for units, flip in (("gsplat", True), ("gsplat_1.5.1", False)):
        G = gsplat_parser_transform(c2w, pts, flip=flip)
        file = write_gsplat_checkpoint(tmp_path / f"{units}.pt", transform_splats(original, G))
        got = mapped(GaussiansFile(str(file), units=units))  # type: ignore[arg-type]
        assert torch.allclose(got["means"], ours["means"], atol=1e-4), units

    # nerfstudio's world: dataparser_transforms.json found two levels up from the export.
    N = _similarity(1.0, seed=5)
    ns = torch.diag(torch.tensor([0.7, 0.7, 0.7, 1.0], dtype=torch.float64)) @ N
    write_dataparser_transforms(tmp_path / "run" / "dataparser_transforms.json", N, 0.7)
    file = write_splatfacto_checkpoint(tmp_path / "run" / "nerfstudio_models" / "step-000029999.ckpt",
                                       transform_splats(original, ns))
    got = mapped(GaussiansFile(str(file), units="nerfstudio"))
    assert torch.allclose(got["means"], ours["means"], atol=1e-4)
    with pytest.raises(ValueError, match="no dataparser_transforms.json beside"):
        file_to_normalised(GaussiansFile(str(tmp_path / "o.ply"), units="nerfstudio"), setup)


def test_gsplat_parser_transform_follows_gsplat(tmp_path: Path) -> None:
    """The facts of gsplat v1.5.3 examples/datasets/normalize.py and colmap.py's Parser: after the
    transform, the median camera distance from the focus point is 1, the points' principal axes
    are x, y, z by decreasing variance with their median at the origin, and (with the flip) the
    points' median height is not above their mean."""
    setup = _setup(_similarity(3.0, seed=2))
    c2w, pts = setup.all_cameras.camera_to_world.double(), setup.points.double()
    pts = torch.cat([pts, pts[:50] + torch.tensor([0.0, 0.0, 0.8], dtype=torch.float64)])  # skewed heights
    T = gsplat_parser_transform(c2w, pts, flip=True)
    s = float(torch.linalg.det(T[:3, :3])) ** (1 / 3)
    R = T[:3, :3] / s
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-9)
    moved = pts @ T[:3, :3].T + T[:3, 3]
    assert torch.allclose(moved.median(dim=0).values.abs(), torch.zeros(3, dtype=torch.float64), atol=0.1)
    cov = torch.cov(moved.T)
    assert torch.allclose(cov - torch.diag(cov.diagonal()), torch.zeros(3, 3, dtype=torch.float64), atol=1e-6 * float(cov.abs().max()))
    assert cov[0, 0] >= cov[1, 1] >= cov[2, 2]
    assert float(moved[:, 2].median()) <= float(moved[:, 2].mean())


def test_a_file_in_the_wrong_units_warns(tmp_path: Path) -> None:
    to_ours = _similarity(0.05)
    setup = _setup(to_ours)
    ours = _splats(300)
    ours["means"] = ours["means"] * 0.5
    original = transform_splats(ours, torch.linalg.inv(to_ours))
    file = write_inria_ply(tmp_path / "o.ply", original)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splats = splats_in_scene(GaussiansFile(str(file)), setup)  # the right units: silent
    assert torch.allclose(splats["means"], ours["means"], atol=1e-4)
    with pytest.warns(UserWarning, match=r"o.ply: the Gaussians and the cameras disagree.*Wrong init.file.units"):
        splats_in_scene(GaussiansFile(str(file), units="normalised"), setup)
    assert check_against_cameras(ours["means"], setup.train_cameras, 1.1, "x") > 0.5


@pytest.mark.parametrize("case", list(BAD_PLY_HEADERS))
def test_a_gaussian_ply_with_a_bad_header_is_named(tmp_path: Path, case: str) -> None:
    header, says = BAD_PLY_HEADERS[case]
    path = write_bad_ply(tmp_path / "bad.ply", header)
    with pytest.raises(ValueError, match=rf"{tmp_path}/bad\.ply.*{says}"):
        read_gaussians_file(path)
    with pytest.raises(ValueError, match=rf"{tmp_path}/bad\.ply.*{says}"):
        read_ply(path)
