"""Opens a trained scene for viewing or benchmarking: a scene-module checkpoint or a 3DGS file.

A checkpoint's module class is the one LightningCLI recorded in its hyperparameters
(``_class_path``), so Gaussian and NeRF scenes open alike; a checkpoint written outside the CLI
needs the class named. A reconstruction made elsewhere (a Gaussian .ply, a gsplat ``ckpt_*.pt``,
a nerfstudio splatfacto ``step-*.ckpt``) becomes a ``GaussianSceneModule`` holding its
Gaussians (in the file's own world).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from lightning_modules.safe_load import read_torch_file
from lightning_modules.scene.contracts import GrowsTrainingSet, RendersViews

__all__ = ["open_scene", "open_scene_data", "scene_device"]


def scene_device(device: str = "auto") -> torch.device:
    """"auto": CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    if module.split(".")[0] != "lightning_modules":  # a name from a file must not import anything else
        raise ValueError(f"module class {path!r}: not one of this project's (lightning_modules.*)")
    if not module:
        raise ValueError(f"module class must be a dotted path such as "
                         f"lightning_modules.scene.gaussians.module.GaussianSceneModule, got {path!r}")
    return getattr(importlib.import_module(module), name)


def open_scene(path: str | Path, module_class: str | None = None, device: str | torch.device = "auto") -> RendersViews:
    """A scene module in eval mode (``RendersViews``: ``render_views``, ``scene_scale``, ``device``).

    Args:
        path: a ``.ckpt`` written by a scene module's `fit`, or a reconstruction file
            (``reconstruction.read_gaussians_file``'s layouts).
        module_class: dotted class path of the checkpoint's module; None: the class the
            checkpoint records.
        device: "auto", "cpu", "cuda", ...

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file, when its kind or module class cannot be told.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene file {path} does not exist")
    dev = scene_device(device) if isinstance(device, str) else device
    if path.suffix in (".ply", ".pt", ".pth"):
        return _gaussians_module(path).to(dev).eval()
    if path.suffix != ".ckpt":
        raise ValueError(f"{path}: expected a scene checkpoint (.ckpt), a Gaussian .ply or a gsplat ckpt_*.pt")
    state = read_torch_file(path, "scene checkpoint")  # refuses pickled code before anything runs
    if isinstance(state, dict) and "pipeline" in state:  # nerfstudio's step-*.ckpt
        return _gaussians_module(path).to(dev).eval()
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{path}: not a Lightning checkpoint of a scene (no state_dict)")
    if "difix_net_config" in state or "difix_prior" in state:
        raise ValueError(f"{path}: a Difix fixer checkpoint, not a scene; give it as the fixer (--fixer {path}) "
                         "and a scene checkpoint (.ckpt of a scene fit) or .ply as the scene")
    if module_class is None:
        module_class = (state.get("hyper_parameters") or {}).get("_class_path")
        if module_class is None:
            raise ValueError(f"{path}: the checkpoint does not name its scene module class; name it "
                             "(e.g. --module-class lightning_modules.scene.gaussians.module.GaussianSceneModule)")
    cls = _import_class(module_class)
    from lightning_modules.scene.base import SceneModule

    if not (isinstance(cls, type) and issubclass(cls, SceneModule)):
        raise ValueError(f"{path}: its module class {module_class} is not a scene module (SceneModule); "
                         "the viewer and benchmarks open scene checkpoints only")
    return cls.load_from_checkpoint(str(path), map_location=dev, weights_only=True).eval()


def _gaussians_module(path: Path) -> Any:
    """A GaussianSceneModule holding a reconstruction file's Gaussians, in the file's own world."""
    from lightning_modules.scene.gaussians.module import GaussianSceneModule
    from lightning_modules.scene.gaussians.reconstruction import read_gaussians_file

    loaded = read_gaussians_file(path)
    return GaussianSceneModule.from_splats(loaded.splats, loaded.sh_degree)


def open_scene_data(ckpt: str | Path) -> GrowsTrainingSet | None:
    """The datamodule a scene checkpoint was trained with, rebuilt and set up (its scene read).

    Rebuilt from the checkpoint's saved hyperparameters (LightningCLI records the class and
    its arguments; paths are relative to the directory the training ran in).

    Returns:
        The set-up datamodule (a SceneDataModule: train / test views, cameras), or None when
        the checkpoint holds no scene datamodule settings.

    Raises:
        FileNotFoundError: naming the scene folder when it has moved.
        ValueError: a datamodule class that is not this project's.
    """
    state: dict[str, Any] = read_torch_file(ckpt, "scene checkpoint")  # no code runs from the file
    hparams = dict(state.get("datamodule_hyper_parameters") or {})
    class_path = hparams.pop("_class_path", "datamodules.scene.datamodule.SceneDataModule")
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}
    if "path" not in hparams:
        return None
    module, _, name = str(class_path).rpartition(".")
    if module.split(".")[0] != "datamodules":  # a class named by a file: this project's datamodules only
        raise ValueError(f"{ckpt}: its datamodule class {class_path!r} is not one of this project's (datamodules.*)")
    data = getattr(importlib.import_module(module), name)(**hparams)
    if not isinstance(data, GrowsTrainingSet):  # e.g. pairs: no scene views to give
        return None
    try:
        data.setup("fit")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{ckpt}: the scene it was trained on ({hparams['path']}) cannot be read: {err}. "
                                "Run from the directory training ran in, or pass the scene folder explicitly") from err
    return data
