"""Existing 3DGS reconstructions as files: what to start a scene from, and reading them.

Layouts read (each fact from the writer's own code; see ``tests/helpers/gaussian_files.py``):

- a Gaussian ``.ply`` in the INRIA layout: the 3DGS code's ``point_cloud/iteration_*/point_cloud.ply``,
  this project's ``point_cloud.ply``, gsplat's ``export_splats`` / ``simple_trainer --save_ply``
  and nerfstudio's ``ns-export gaussian-splat`` (``ply.read_ply``);
- a gsplat ``simple_trainer`` checkpoint ``ckpts/ckpt_<step>_rank<r>.pt``: ``{"step": int,
  "splats": {means, scales, quats, opacities, sh0, shN}}`` (gsplat >= 1.1; 1.0 named the means
  ``means3d``), the file the Difix3D reference's gsplat example takes as ``--ckpt``;
- a nerfstudio splatfacto checkpoint ``nerfstudio_models/step-*.ckpt``: ``{"pipeline":
  {"_model.gauss_params.<name>": ...}, ...}`` with ``features_dc`` (N, 3), ``features_rest``
  (N, K-1, 3) and ``opacities`` (N, 1).

All hold the raw parameters (log-scales, logit opacities, unnormalised wxyz quaternions, SH
coefficients); each is checked for shapes, an SH degree and finite values before use.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from datamodules.readers.scene_data import env_path

from lightning_modules.safe_load import read_torch_file
from lightning_modules.scene.gaussians.ply import ply_header, read_ply
from lightning_modules.scene.gaussians.splats import SPLAT_NAMES, rgb_to_sh

__all__ = ["GaussiansFile", "LoadedGaussians", "read_gaussians_file", "Units", "WORLDS"]

Units = Literal["original", "normalised", "gsplat", "gsplat_1.5.1", "nerfstudio", "auto"]
WORLDS = ("original", "normalised", "gsplat", "gsplat_1.5.1", "nerfstudio")
"""The worlds a file's Gaussians can be in (every ``Units`` but "auto"), in the order ties go."""


@dataclass
class GaussiansFile:
    """A trained 3DGS to start a scene from instead of points or random Gaussians.

    Attributes:
        path: a Gaussian ``.ply``, a gsplat ``ckpt_*.pt`` or a nerfstudio splatfacto ``step-*.ckpt``
            (``~`` and ``$VARIABLES`` expanded).
        units: the world the file's Gaussians are in:
            "original": the dataset's own world (COLMAP's, transforms.json's): the 3DGS code's
            .ply, this project's ``point_cloud.ply``, gsplat trained with
            ``--no-normalize-world-space`` (as the Difix3D reference's README trains it).
            "normalised": this project's normalised world of the same dataset and read options
            (``export_ply(original_units=False)``).
            "gsplat": gsplat's normalised world (``simple_trainer``'s default
            ``normalize_world_space``, gsplat >= 1.5.2 with its up-side-down flip), rebuilt here
            from the scene's cameras and points as gsplat's COLMAP parser builds it.
            "gsplat_1.5.1": the same before that flip (gsplat <= 1.5.1, the Difix3D reference's fork).
            "nerfstudio": nerfstudio's dataparser world; needs ``dataparser_transforms``.
            "auto": the one of these worlds whose renders of a few training views match the
            photos best (nerfstudio only where its transforms file is found, gsplat only with the
            scene's points). With any other value the same renders run, and a warning gives the
            PSNRs when another world explains the photos far better (``world_photos``).
        dataparser_transforms: nerfstudio's ``dataparser_transforms.json`` of the run (its output
            folder); None: looked for beside ``path`` and two levels up.
        sh_degree: the SH degree the file must have (an error names both otherwise); None: the file's.
        densify: keep the module's densification strategy running from step 0 on the loaded
            Gaussians (its state starts fresh: no gradient statistics carried over); False: the
            Gaussians keep their number (what the reference's Difix3D fine-tuning of a 30k-step
            3DGS amounts to: its refinement stopped at step 15k).
    """

    path: str
    units: Units = "original"
    dataparser_transforms: str | None = None
    sh_degree: int | None = None
    densify: bool = False

    def __post_init__(self) -> None:
        if self.units not in (*WORLDS, "auto"):
            raise ValueError(f"init.file.units must be {', '.join(WORLDS)} or auto, got {self.units!r}")
        if self.sh_degree is not None and not 0 <= self.sh_degree <= 4:
            raise ValueError(f"init.file.sh_degree must be 0..4 (gsplat) or null, got {self.sh_degree}")


@dataclass
class LoadedGaussians:
    """Raw Gaussians read from a file (in the file's own world).

    Attributes:
        splats: means (N, 3), scales (N, 3) log, quats (N, 4) wxyz, opacities (N,) logit,
            sh0 (N, 1, 3), shN (N, K-1, 3), float32 on the CPU.
        layout: what the file was ("INRIA-layout .ply", "gsplat simple_trainer checkpoint (step 29999)", ...).
        path: the file.
    """

    splats: dict[str, Tensor]
    layout: str
    path: Path

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.splats["shN"].shape[1] + 1))) - 1

    def __len__(self) -> int:
        return int(self.splats["means"].shape[0])


def read_gaussians_file(path: str | Path, sh_degree: int | None = None) -> LoadedGaussians:
    """Reads and checks a trained 3DGS file of any layout above.

    Args:
        path: the file.
        sh_degree: the SH degree it must have, or None.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and the problem: an unknown layout (with the keys found),
            a gsplat appearance-model checkpoint, missing or misshapen parameters, non-finite
            values (which parameter, how many Gaussians), another SH degree than asked.
    """
    path = env_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Gaussians file {path} does not exist (init.file.path)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"ply\n" or magic[:3] == b"ply":
        _, dtype, comments, _ = ply_header(path)
        names = set(dtype.names or ())
        if any("nerstudio" in c.lower() or "nerfstudio" in c.lower() for c in comments):
            layout = "nerfstudio ns-export .ply"
        elif "nx" not in names:
            layout = "gsplat export_splats .ply"
        else:
            layout = "INRIA-layout .ply"
        loaded = LoadedGaussians(read_ply(path), layout, path)
    elif zipfile.is_zipfile(path) or path.suffix in (".pt", ".pth", ".ckpt"):
        loaded = _from_torch_file(path, read_torch_file(path, "Gaussians file (init.file.path)"))
    else:
        raise ValueError(f"{path}: neither a .ply nor a torch checkpoint; init.file.path takes a Gaussian .ply, "
                         "a gsplat ckpt_*.pt or a nerfstudio splatfacto step-*.ckpt")
    _check(loaded)
    if sh_degree is not None and loaded.sh_degree != sh_degree:
        raise ValueError(f"{path}: its Gaussians have SH degree {loaded.sh_degree} "
                         f"({loaded.splats['shN'].shape[1]} higher coefficients per channel), init.file.sh_degree asks "
                         f"for {sh_degree}; drop init.file.sh_degree to take the file's")
    return loaded


def _from_torch_file(path: Path, state: Any) -> LoadedGaussians:
    if isinstance(state, dict) and isinstance(state.get("splats"), dict):
        return _from_gsplat(path, state)
    if isinstance(state, dict) and isinstance(state.get("pipeline"), dict):
        return _from_nerfstudio(path, state["pipeline"], state.get("step"))
    if isinstance(state, dict) and "state_dict" in state:
        raise ValueError(f"{path}: a Lightning checkpoint; a scene of this project resumes with --ckpt_path, or "
                         "start from its point_cloud.ply (units: original)")
    if isinstance(state, (tuple, list)):
        raise ValueError(f"{path}: a tuple (the 3DGS code's chkpnt*.pth?); start from its "
                         "point_cloud/iteration_*/point_cloud.ply instead")
    keys = sorted(state)[:12] if isinstance(state, dict) else type(state).__name__
    raise ValueError(f"{path}: no Gaussians found: neither a gsplat simple_trainer checkpoint ('splats') nor a "
                     f"nerfstudio one ('pipeline' with _model.gauss_params.*); it holds {keys}")


def _from_gsplat(path: Path, state: dict[str, Any]) -> LoadedGaussians:
    splats = dict(state["splats"])
    if "means3d" in splats and "means" not in splats:  # gsplat 1.0's simple_trainer
        splats["means"] = splats.pop("means3d")
    if "sh0" not in splats and {"features", "colors"} <= set(splats):
        raise ValueError(f"{path}: a gsplat checkpoint trained with --app_opt (per-Gaussian 'features' and "
                         "'colors' decoded by its appearance network, no SH colours); this project renders SH "
                         "colours: start from the .ply simple_trainer writes with --save_ply (colours baked in)")
    missing = [k for k in SPLAT_NAMES if k not in splats]
    if missing:
        raise ValueError(f"{path}: a gsplat checkpoint without {missing} (it holds {sorted(splats)}); expected "
                         f"{list(SPLAT_NAMES)} as gsplat >= 1.1's simple_trainer saves them")
    step = state.get("step")
    layout = "gsplat simple_trainer checkpoint" + (f" (step {step})" if isinstance(step, int) else "")
    return LoadedGaussians({k: _tensor(path, k, splats[k]) for k in SPLAT_NAMES}, layout, path)


def _from_nerfstudio(path: Path, pipeline: dict[str, Any], step: Any) -> LoadedGaussians:
    prefix = "_model.gauss_params."
    params = {k[len(prefix):]: v for k, v in pipeline.items() if k.startswith(prefix)}
    need = ("means", "scales", "quats", "opacities", "features_dc", "features_rest")
    missing = [k for k in need if k not in params]
    if missing:
        found = sorted({k.split(".")[1] for k in pipeline if k.count(".") >= 2})[:8]
        raise ValueError(f"{path}: a nerfstudio checkpoint without splatfacto's {[prefix + k for k in missing]} "
                         f"(a {found} model?); only splatfacto holds Gaussians")
    dc = _tensor(path, "features_dc", params["features_dc"])
    rest = _tensor(path, "features_rest", params["features_rest"])
    if rest.dim() == 3 and rest.shape[1] == 0:
        # splatfacto at SH degree 0 keeps logit colours in features_dc (its exporter: RGB2SH(sigmoid(.))).
        dc = rgb_to_sh(torch.sigmoid(dc))
    splats = {
        "means": _tensor(path, "means", params["means"]),
        "scales": _tensor(path, "scales", params["scales"]),
        "quats": _tensor(path, "quats", params["quats"]),
        "opacities": _tensor(path, "opacities", params["opacities"]).reshape(-1),
        "sh0": dc.reshape(dc.shape[0], 1, 3) if dc.dim() == 2 else dc,
        "shN": rest,
    }
    layout = "nerfstudio splatfacto checkpoint" + (f" (step {step})" if isinstance(step, int) else "")
    return LoadedGaussians(splats, layout, path)


def _tensor(path: Path, name: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{path}: '{name}' is a {type(value).__name__}, not a tensor")
    return value.detach().float().cpu().contiguous()


def _check(loaded: LoadedGaussians) -> None:
    """Shapes (one N, gsplat's trailing sizes, an SH degree 0..4), finite values, non-zero quaternions."""
    s, path = loaded.splats, loaded.path
    n = s["means"].shape[0] if s["means"].dim() == 2 else -1
    expect = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,), "sh0": (n, 1, 3)}
    for name, shape in expect.items():
        if tuple(s[name].shape) != shape:
            raise ValueError(f"{path}: '{name}' has shape {tuple(s[name].shape)}, expected {shape} "
                             f"(N = {n} Gaussians from 'means')")
    shn = s["shN"]
    k = shn.shape[1] + 1 if shn.dim() == 3 else -1
    if shn.dim() != 3 or shn.shape[0] != n or shn.shape[2] != 3 or round(math.sqrt(k)) ** 2 != k or k > 25:
        raise ValueError(f"{path}: 'shN' has shape {tuple(shn.shape)}, expected ({n}, (d+1)^2 - 1, 3) for an SH "
                         "degree d in 0..4")
    if n == 0:
        raise ValueError(f"{path}: holds no Gaussians")
    for name in SPLAT_NAMES:
        bad = ~torch.isfinite(s[name].reshape(n, -1)).all(dim=1)
        if bool(bad.any()):
            raise ValueError(f"{path}: {int(bad.sum())} of {n} Gaussians have non-finite '{name}' (first at row "
                             f"{int(bad.nonzero()[0])}); remove those rows (gsplat's and nerfstudio's exporters "
                             "drop them) and start again")
    zero = s["quats"].norm(dim=-1) == 0
    if bool(zero.any()):
        raise ValueError(f"{path}: {int(zero.sum())} Gaussians have an all-zero rotation quaternion (row "
                         f"{int(zero.nonzero()[0])}); it has no orientation")


# A hyperparameter of GaussianSceneModule, so checkpoints hold it; allow it in weights-only loading.
torch.serialization.add_safe_globals([GaussiansFile])
