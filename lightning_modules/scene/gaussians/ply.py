"""Gaussian .ply files in the INRIA 3DGS layout, and similarity transforms of Gaussians.

Layout (binary little endian, every property ``float``, one vertex per Gaussian), the one
the reference 3DGS code, SuperSplat and most viewers read:

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3(K-1)-1} opacity
    scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

``f_rest`` is channel-major as in INRIA: ``shN`` (N, K-1, 3) transposed to (N, 3, K-1) and
flattened. ``opacity`` is the logit, ``scale_*`` the log-scales, ``rot_*`` wxyz: the raw
(pre-activation) values, the same as gsplat's parameters. Normals are written as zeros.

Scenes are trained in a normalised world (``normalised = T @ original``, T a similarity
``s R | t``). ``transform_splats`` maps Gaussians through any similarity (positions,
log-scales shifted by ``log s``, rotations, and the SH coefficients rotated per degree), so
``write_ply(..., transform=T.inverse())`` exports in the original world units.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["write_ply", "read_ply", "transform_splats", "decompose_similarity", "rotate_sh"]

_SPLAT_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def _property_names(n_rest: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(n_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def write_ply(path: str | os.PathLike, splats: dict[str, Tensor], transform: Tensor | None = None) -> Path:
    """Writes Gaussians to ``path`` in the INRIA layout, atomically (temp file + os.replace).

    Args:
        path: output file (parent folders are created).
        splats: raw gsplat tensors: means (N, 3), scales (N, 3) log, quats (N, 4) wxyz,
            opacities (N,) logit, sh0 (N, 1, 3), shN (N, K-1, 3).
        transform: optional (4, 4) similarity applied before writing (e.g. the inverse of the
            data normalisation, to export in the original world units).

    Returns:
        The written path.
    """
    path = Path(path)
    missing = [k for k in _SPLAT_KEYS if k not in splats]
    if missing:
        raise KeyError(f"write_ply({path}): splats lack {missing}")
    s = {k: splats[k].detach().float().cpu() for k in _SPLAT_KEYS}
    if transform is not None:
        s = transform_splats(s, transform)
    n = s["means"].shape[0]
    rest = s["shN"].transpose(1, 2).reshape(n, -1)  # (N, 3*(K-1)) channel-major, as INRIA
    data = torch.cat(
        [
            s["means"],
            torch.zeros(n, 3),
            s["sh0"].reshape(n, 3),
            rest,
            s["opacities"].reshape(n, 1),
            s["scales"],
            s["quats"],
        ],
        dim=1,
    ).numpy().astype("<f4")
    names = _property_names(rest.shape[1])
    header = "ply\nformat binary_little_endian 1.0\n"
    header += f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names)
    header += "end_header\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(np.ascontiguousarray(data).tobytes())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_ply(path: str | os.PathLike, transform: Tensor | None = None) -> dict[str, Tensor]:
    """Reads an INRIA-layout Gaussian .ply (as written by ``write_ply`` or the 3DGS code).

    Properties are found by name, so their order and extra properties do not matter.

    Args:
        path: the .ply file.
        transform: optional (4, 4) similarity applied after reading.

    Returns:
        Raw gsplat tensors (float32): means, scales, quats, opacities, sh0, shN.

    Raises:
        ValueError: naming the file, for anything but a binary little-endian float vertex list
            with the INRIA properties.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_ply: {path} does not exist")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"read_ply: {path} is not a .ply file (no 'ply' magic line)")
        names: list[str] = []
        n = None
        fmt = None
        in_vertex = False
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"read_ply: {path} has no 'end_header' line")
            words = line.decode("ascii", errors="replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                in_vertex = words[1] == "vertex"
                if in_vertex:
                    n = int(words[2])
                elif n is not None:
                    raise ValueError(f"read_ply: {path} has an element '{words[1]}' after the vertices")
            elif words[0] == "property" and in_vertex:
                if words[1] != "float" and words[1] != "float32":
                    raise ValueError(f"read_ply: {path} property '{words[-1]}' is {words[1]}, expected float")
                names.append(words[-1])
        if fmt != "binary_little_endian":
            raise ValueError(f"read_ply: {path} is '{fmt}', only binary_little_endian is supported")
        if n is None:
            raise ValueError(f"read_ply: {path} has no vertex element")
        raw = f.read(n * len(names) * 4)
    if len(raw) != n * len(names) * 4:
        raise ValueError(f"read_ply: {path} is truncated ({len(raw)} of {n * len(names) * 4} data bytes)")
    data = torch.from_numpy(np.frombuffer(raw, dtype="<f4").reshape(n, len(names)).astype(np.float32))
    col = {name: i for i, name in enumerate(names)}

    def take(keys: list[str]) -> Tensor:
        absent = [k for k in keys if k not in col]
        if absent:
            raise ValueError(f"read_ply: {path} lacks the Gaussian properties {absent}")
        return data[:, [col[k] for k in keys]]

    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    if n_rest % 3 != 0 or not _is_sh_count(n_rest // 3 + 1):
        raise ValueError(f"read_ply: {path} has {n_rest} f_rest properties; 3 * ((d+1)^2 - 1) expected")
    rest = take([f"f_rest_{i}" for i in range(n_rest)])
    splats = {
        "means": take(["x", "y", "z"]),
        "scales": take(["scale_0", "scale_1", "scale_2"]),
        "quats": take(["rot_0", "rot_1", "rot_2", "rot_3"]),
        "opacities": take(["opacity"])[:, 0].contiguous(),
        "sh0": take(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :].contiguous(),
        "shN": rest.reshape(n, 3, n_rest // 3).transpose(1, 2).contiguous(),
    }
    if transform is not None:
        splats = transform_splats(splats, transform)
    return splats


def _is_sh_count(k: int) -> bool:
    d = int(round(math.sqrt(k)))
    return d * d == k and 1 <= d <= 5


def decompose_similarity(transform: Tensor) -> tuple[float, Tensor, Tensor]:
    """Splits a (4, 4) similarity ``[s R | t]`` into (s, R (3, 3), t (3,)).

    Raises:
        ValueError: when the matrix is not a similarity (shear, anisotropic scale, reflection).
    """
    T = torch.as_tensor(transform, dtype=torch.float64).cpu()
    if T.shape != (4, 4):
        raise ValueError(f"transform must be (4, 4), got {tuple(T.shape)}")
    A = T[:3, :3]
    s = float(torch.linalg.det(A)) ** (1.0 / 3.0) if float(torch.linalg.det(A)) > 0 else float("nan")
    if not math.isfinite(s) or s <= 0:
        raise ValueError("transform is not a similarity: its 3x3 block has a non-positive determinant")
    R = A / s
    if not torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-4):
        raise ValueError("transform is not a similarity: its 3x3 block is not a scaled rotation")
    return s, R, T[:3, 3].clone()


def _rotmat_to_quat(R: Tensor) -> Tensor:
    from datamodules.cameras.cameras import rotmat_to_quat

    return rotmat_to_quat(R)


def _quat_mul(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of wxyz quaternions (..., 4)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def rotate_sh(shN: Tensor, R: Tensor) -> Tensor:
    """Rotates higher SH coefficients so that colours follow a world rotation ``x' = R x``.

    After the call, evaluating the new coefficients at direction ``R d`` gives what the old
    ones gave at ``d``. Each degree l transforms by a (2l+1)^2 matrix, found exactly by least
    squares on sampled directions with gsplat's own SH basis (so its sign conventions hold).

    Args:
        shN: (N, K-1, 3) coefficients of degrees 1..d.
        R: (3, 3) rotation.

    Returns:
        (N, K-1, 3) rotated coefficients.
    """
    from gsplat.cuda._torch_impl import _eval_sh_bases_fast

    k = shN.shape[1] + 1
    if k == 1:
        return shN.clone()
    R = torch.as_tensor(R, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(256, 3, generator=gen, dtype=torch.float64), dim=-1)
    # Y_new(R d) must equal Y_old(d): with basis rows Y(d), Y(R^T d') = Y(d') @ X per degree.
    basis = _eval_sh_bases_fast(k, dirs)  # (S, K)
    basis_back = _eval_sh_bases_fast(k, dirs @ R)  # rows: Y(R^T d)
    out = torch.empty_like(shN)
    degree = int(round(math.sqrt(k))) - 1
    for l in range(1, degree + 1):  # loop over <= 4 degrees, not over Gaussians
        lo, hi = l * l, (l + 1) * (l + 1)
        X = torch.linalg.lstsq(basis[:, lo:hi], basis_back[:, lo:hi]).solution  # (2l+1, 2l+1)
        # c_new(d') = f_new . Y(d') = f_old . Y(R^T d') = f_old . (X^T Y(d'))  =>  f_new = X f_old
        block = shN[:, lo - 1 : hi - 1, :].double()
        out[:, lo - 1 : hi - 1, :] = torch.einsum("ij,njc->nic", X, block).to(shN.dtype)
    return out


def transform_splats(splats: dict[str, Tensor], transform: Tensor) -> dict[str, Tensor]:
    """Maps raw Gaussians through a similarity ``x' = s R x + t``.

    Args:
        splats: raw gsplat tensors (see ``write_ply``).
        transform: (4, 4) similarity.

    Returns:
        New raw tensors: means mapped, log-scales + log(s), quats left-multiplied by R,
        sh0 unchanged, shN rotated by R.
    """
    s, R, t = decompose_similarity(transform)
    means = splats["means"].double() @ (s * R).T + t
    q_r = _rotmat_to_quat(R).to(torch.float64)
    quats = _quat_mul(q_r.expand_as(splats["quats"]), splats["quats"].double())
    return {
        "means": means.to(splats["means"].dtype),
        "scales": splats["scales"] + math.log(s),
        "quats": quats.to(splats["quats"].dtype),
        "opacities": splats["opacities"].clone(),
        "sh0": splats["sh0"].clone(),
        "shN": rotate_sh(splats["shN"], R),
    }
