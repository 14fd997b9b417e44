"""TorchScript image-to-image fixers, such as the first, withdrawn release of NVIDIA's Fixer.

NVIDIA's current Fixer (``nvidia/Fixer``: ``pretrained_fixer.pkl`` on Cosmos-Predict2 0.6B) loads
through ``lightning_modules/difix/cosmos``. Its first release (nv-tlabs/Fixer, a single-step fixer
on a Cosmos-Predict2 2B backbone, no reference view) was published as a TorchScript export, ``pretrained/pretrained_fixer_jit.pt`` in the Hugging
Face repo ``nvidia/Fixer`` (``hf download nvidia/Fixer --local-dir models`` puts it at
``models/pretrained/``). Its inference script (nv-tlabs/Fixer, first release of 2025-10-23,
``src/inference_pretrained_model_jit.py``) imports Transformer Engine before ``torch.jit.load``
(its graph calls TE's TorchScript operators), feeds one image (1, 3, H, W) in [-1, 1] in bfloat16
on CUDA at one of its fixed sizes (W x H 1024x576 by default; 832x448, 704x384, 512x288 there,
960x544, 1360x768, 256x144 in the later non-JIT script), resized with Pillow's BILINEAR, and
reads the same shape back in [-1, 1]; the timestep is inside the model. The script was removed
from nv-tlabs/Fixer in November 2025 and the model repo stopped tracking the file: a copy (a
file, a folder of that repo, or the Hugging Face cache's, under the name ``nvidia/Fixer`` when the
cache holds nothing newer) is what this backend runs.

``TorchScriptNet`` runs any such file the same way: one image per call (the export's batch size),
in its value range; its size policy is a fixed size with antialiased bilinear filtering (torch's,
which equals Pillow's BILINEAR to 1e-5 in float). References are ignored (the model takes none)
and the log says so once. A TorchScript file is a program: load only files you trust; its code is
tried once before step 1 (`ReadyFixer.try_once`).
"""
from __future__ import annotations

import importlib
import logging
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_modules.difix.fixers.errors import FixerOutputError
from lightning_modules.difix.net.sizing import SizePolicy, SizeSpec

log = logging.getLogger("difix3d.fixer")

__all__ = ["TorchScriptNet", "HUB_FILES", "FIXER_SIZES", "is_torchscript_file", "folder_export",
           "cached_hub_file", "required_operator_libraries", "check_torchscript"]

# Where the withdrawn export sat in the hub repo (a Hugging Face cache may still hold a copy).
HUB_FILES = {"nvidia/Fixer": "pretrained/pretrained_fixer_jit.pt"}
# What a local folder of such a repo may hold (`hf download nvidia/Fixer --local-dir DIR`, or DIR/models).
FOLDER_FILES = ("pretrained/pretrained_fixer_jit.pt", "models/pretrained/pretrained_fixer_jit.pt")
# (height, width) sizes nvidia/Fixer's scripts run at; the first is their default.
FIXER_SIZES = ((576, 1024), (448, 832), (384, 704), (288, 512), (544, 960), (768, 1360), (144, 256))
DEFAULT_SIZE = FIXER_SIZES[0]
DEFAULT_RANGE = (-1.0, 1.0)
# Operator namespaces a TorchScript graph may call, and the Python package that registers them.
KNOWN_LIBRARIES = {"tex_ts": "transformer_engine"}  # Transformer Engine: TORCH_LIBRARY(tex_ts, m)
BUILTIN_NAMESPACES = {"aten", "prim", "quantized", "_quantized", "profiler", "cuda", "_caffe2", "torchvision"}
LICENCES = {"nvidia/Fixer": "NVIDIA Open Model License (weights); code Apache-2.0"}


def is_torchscript_file(path: Path) -> bool:
    """A TorchScript archive: a zip whose entries include ``<name>/code/`` (torch.save zips have none)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def folder_export(folder: Path) -> Path | None:
    """The TorchScript export in a local folder of the Fixer repo, or None."""
    return next((folder / f for f in FOLDER_FILES if (folder / f).is_file()), None)


def cached_hub_file(name: str) -> Path | None:
    """A cached copy of the hub id's withdrawn TorchScript export, or None."""
    if name not in HUB_FILES:
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, HUB_FILES[name])
    return Path(cached) if isinstance(cached, str) else None


def required_operator_libraries(path: Path) -> dict[str, list[str]]:
    """Operator namespaces the archive's TorchScript code calls beyond torch's own, with their ops
    (``ops.tex_ts.te_gemm_ts`` -> {"tex_ts": ["te_gemm_ts"]}); read from its code, nothing runs."""
    found: dict[str, set[str]] = {}
    with zipfile.ZipFile(path) as z:
        for entry in z.namelist():
            if "/code/" in entry and entry.endswith(".py"):
                for ns, op in re.findall(r"\bops\.(\w+)\.(\w+)", z.read(entry).decode("utf-8", errors="replace")):
                    if ns not in BUILTIN_NAMESPACES:
                        found.setdefault(ns, set()).add(op)
    return {ns: sorted(ops) for ns, ops in found.items()}


def _registered(ns: str, op: str) -> bool:
    try:
        getattr(getattr(torch.ops, ns), op)
        return True
    except (AttributeError, RuntimeError):
        return False


def _import_libraries(name: str, libraries: list[str]) -> None:
    for module in libraries:
        try:
            importlib.import_module(module)
        except ImportError as err:
            hint = (" (NVIDIA Transformer Engine: `pip install transformer_engine[pytorch]`, CUDA only, as in the "
                    "Fixer's nvcr.io/nvidia/pytorch:24.10-py3 container)") if module == "transformer_engine" else ""
            raise ValueError(f"fixer {name!r}: needs the operator library {module!r}, which is not installed"
                             f"{hint}: {err}") from err


def check_torchscript(name: str, path: Path, operator_libraries: list[str] | None = None) -> None:
    """Checks that every operator the file's code calls is registered, importing the operator
    libraries first (None: the ones its namespaces are known to come from).

    Raises:
        ValueError: naming the file, or the library and the operators missing.
    """
    needs = required_operator_libraries(path)
    libraries = operator_libraries if operator_libraries is not None else sorted(
        {KNOWN_LIBRARIES[ns] for ns in needs if ns in KNOWN_LIBRARIES})
    _import_libraries(name, list(libraries))
    missing = {ns: ops for ns, ops in needs.items() if not all(_registered(ns, op) for op in ops)}
    if missing:
        said = "; ".join(f"{ns}::{', '.join(ops[:4])}" + (f" (from {KNOWN_LIBRARIES[ns]})" if ns in KNOWN_LIBRARIES
                                                            else "") for ns, ops in missing.items())
        raise ValueError(f"fixer {name!r}: {path} calls operators no loaded library registers: {said}. Install the "
                         "library that defines them and name its module in the fixer's operator_libraries")


class TorchScriptNet(nn.Module):
    """A TorchScript image-to-image model with the fixer-network contract (`ReadyFixer` runs it).

    Args:
        path: the TorchScript file.
        name: what the config called it (for messages).
        value_range: (low, high) the model takes and returns (Fixer: (-1, 1)).
        operator_libraries: modules imported before loading (None: the known ones it needs).
    """

    uses_references = False

    def __init__(self, path: str | Path, name: str, value_range: tuple[float, float] | None = None,
                 operator_libraries: list[str] | None = None) -> None:
        super().__init__()
        value_range = tuple(value_range) if value_range is not None else DEFAULT_RANGE
        if len(value_range) != 2 or not value_range[0] < value_range[1]:
            raise ValueError(f"fixer {name!r}: value_range must be [low, high] with low < high, got {value_range}")
        self.path, self.name = Path(path), name
        self.value_range = (float(value_range[0]), float(value_range[1]))
        check_torchscript(name, self.path, operator_libraries)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
            try:
                self.model = torch.jit.load(str(self.path), map_location="cpu")
            except RuntimeError as err:
                raise ValueError(f"fixer {name!r}: {self.path} does not load as TorchScript: "
                                 f"{str(err).strip().splitlines()[0]}") from err
        self._dtype = torch.float32

    def size_policy(self, size: SizeSpec = "auto") -> SizePolicy:
        """A fixed size ("auto": the Fixer's default 576 x 1024), bilinear there and back as its scripts."""
        if isinstance(size, str) and size != "auto":
            raise ValueError(f"fixer {self.name!r}: a TorchScript fixer runs at a fixed size: size is auto "
                             f"({DEFAULT_SIZE[0]} x {DEFAULT_SIZE[1]}) or [height, width], not {size!r}")
        fixed = DEFAULT_SIZE if size == "auto" else (int(size[0]), int(size[1]))
        if self.name in HUB_FILES and tuple(fixed) not in FIXER_SIZES:
            log.warning("fixer %s: size %s is none of its published sizes %s", self.name, list(fixed),
                        [list(s) for s in FIXER_SIZES])
        return SizePolicy("fixed", size=fixed, filter="bilinear")

    def to_dtype(self, dtype: torch.dtype) -> TorchScriptNet:
        self.model.to(dtype)
        self._dtype = dtype
        return self

    def describe(self) -> str:
        """The file, how it runs, what it ignores, its licence (the ready fixer's load line)."""
        lo, hi = self.value_range
        licence = LICENCES.get(self.name, "the file's own")
        return (f"TorchScript {self.path} | one image per call | values [{lo:g}, {hi:g}] | dtype: "
                f"{str(self._dtype).replace('torch.', '')} | reference view: none (references are ignored) | "
                f"licence: {licence}")

    def forward(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) in `value_range` -> the model's raw outputs, (B, 3, H, W) in its dtype; `refs` ignored.

        Raises:
            FixerOutputError: the model returned something else than one image of its input's shape.
        """
        outs = []
        for i in range(images.shape[0]):  # one image per call, as the export was traced
            x = images[i:i + 1].to(self._dtype)
            y = self.model(x)
            if not isinstance(y, Tensor) or tuple(y.shape) != tuple(x.shape):
                got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
                raise FixerOutputError(f"fixer {self.name!r}: returned {got} for an input of shape {tuple(x.shape)}; "
                                       "an image fixer returns its input's shape")
            outs.append(y)
        return torch.cat(outs)
