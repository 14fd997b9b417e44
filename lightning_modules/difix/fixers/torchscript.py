"""TorchScript image-to-image fixers, such as NVIDIA's successor to Difix, Fixer (``nvidia/Fixer``).

Fixer (nv-tlabs/Fixer, a single-step fixer on a Cosmos-Predict2 2B backbone, no reference view)
was published with a TorchScript export, ``pretrained/pretrained_fixer_jit.pt`` in the Hugging
Face repo ``nvidia/Fixer`` (``hf download nvidia/Fixer --local-dir models`` puts it at
``models/pretrained/``). Its inference script (nv-tlabs/Fixer, first release of 2025-10-23,
``src/inference_pretrained_model_jit.py``) imports Transformer Engine before ``torch.jit.load``
(its graph calls TE's TorchScript operators), feeds one image (1, 3, H, W) in [-1, 1] in bfloat16
on CUDA at one of its fixed sizes (W x H 1024x576 by default; 832x448, 704x384, 512x288 there,
960x544, 1360x768, 256x144 in the later non-JIT script), resized with Pillow's BILINEAR, and
reads the same shape back in [-1, 1]; the timestep is inside the model. The script was removed
from nv-tlabs/Fixer later, and the file most likely from the model repo's main branch, so a
copy may be all there is.

``TorchScriptFixer`` runs any such file the same way: images resized to the model's size with
antialiased bilinear filtering (torch's, which equals Pillow's BILINEAR to 1e-5 in float), mapped
to its value range, one image per call (the export's batch size), and back to the render's
size. References are ignored (the model takes none) and the log says so once. A TorchScript
file is a program: load only files you trust.
"""
from __future__ import annotations

import importlib
import logging
import re
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.difix.fixers.image_fixer import check_finite, resolve_dtype

log = logging.getLogger("difix3d.fixer")

__all__ = ["TorchScriptFixer", "HUB_FILES", "FIXER_SIZES", "is_torchscript_file", "torchscript_path",
           "required_operator_libraries", "check_torchscript"]

# Hub ids whose fixer is a TorchScript file: repo -> file in the repo.
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


def _local(name: str) -> Path | None:
    path = Path(name).expanduser()
    if path.is_file():
        return path if is_torchscript_file(path) else None
    if path.is_dir():
        return next((path / f for f in FOLDER_FILES if (path / f).is_file()), None)
    return None


def is_torchscript_name(name: str) -> bool:
    """Whether a fixer name stands for a TorchScript fixer (hub id, file or folder)."""
    return name in HUB_FILES or _local(name) is not None


def torchscript_path(name: str, download: bool = True) -> Path:
    """The TorchScript file a fixer name stands for: the file, the one in a repo folder, or the
    hub file from the Hugging Face cache (downloaded when ``download`` and the hub is on).

    Raises:
        FileNotFoundError / ValueError: saying what to download where.
    """
    local = _local(name)
    if local is not None:
        return local
    if name not in HUB_FILES:
        raise FileNotFoundError(f"fixer {name!r}: not a TorchScript file, nor a folder with {' or '.join(FOLDER_FILES)}")
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    from lightning_modules.difix.fixers.checks import hub_offline

    filename = HUB_FILES[name]
    cached = try_to_load_from_cache(name, filename)
    if isinstance(cached, str):
        return Path(cached)
    get = (f"`hf download {name} {filename} --local-dir DIR` on a machine with network, copy DIR here and name "
           f"DIR (or DIR/{filename}) as the fixer")
    if hub_offline() or not download:
        raise ValueError(f"fixer {name!r}: {filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                         f"the hub is off (HF_HUB_OFFLINE=1). {get}.")
    try:
        return Path(hf_hub_download(name, filename))
    except Exception as err:  # noqa: BLE001 - no network, gated repo, file withdrawn from main
        raise ValueError(f"fixer {name!r}: could not download {filename} ({type(err).__name__}: {err}). NVIDIA "
                         "removed the TorchScript export from nv-tlabs/Fixer, likely from the repo's main branch too; "
                         f"with a copy, name its path. Otherwise {get}.") from err


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


def check_torchscript(name: str, operator_libraries: list[str] | None = None) -> Path | None:
    """Finds the file and checks that every operator its code calls is registered, importing the
    operator libraries first (None: the ones its namespaces are known to come from). Downloads
    nothing: a hub file not cached yet while the hub is on is checked when it is loaded.

    Returns:
        The file, or None for a hub file still to download.

    Raises:
        FileNotFoundError / ValueError: naming the file, or the library and the operators missing.
    """
    from lightning_modules.difix.fixers.checks import hub_offline

    if name in HUB_FILES and _local(name) is None and not hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, HUB_FILES[name]), str):
            return None
    path = torchscript_path(name, download=False)
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
    return path


class TorchScriptFixer(nn.Module):
    """A TorchScript image-to-image fixer with the ImageFixer contract (renders of any size in,
    the same size out, references accepted and ignored).

    Args:
        path: the TorchScript file.
        name: what the config called it (for messages).
        size: (height, width) the model runs at (nvidia/Fixer: one of ``FIXER_SIZES``).
        dtype: "auto" (bfloat16 on CUDA, float32 on the CPU), "float32", "bfloat16", "float16".
        device: where it runs; None: where the images are.
        value_range: (low, high) the model takes and returns (Fixer: (-1, 1)).
        operator_libraries: modules imported before loading (None: the known ones it needs).
    """

    def __init__(self, path: str | Path, name: str, size: tuple[int, int] = DEFAULT_SIZE, dtype: str = "auto",
                 device: str | None = None, value_range: tuple[float, float] = DEFAULT_RANGE,
                 operator_libraries: list[str] | None = None) -> None:
        super().__init__()
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"fixer {name!r}: size must be [height, width] > 0, got {size}")
        if len(value_range) != 2 or not value_range[0] < value_range[1]:
            raise ValueError(f"fixer {name!r}: value_range must be [low, high] with low < high, got {value_range}")
        if name in HUB_FILES and tuple(size) not in FIXER_SIZES:
            log.warning("fixer %s: size %s is none of its published sizes %s", name, list(size), [list(s) for s in FIXER_SIZES])
        check_torchscript(str(path), operator_libraries)
        self.path = Path(path)
        self.name, self.size, self.dtype_name = name, (int(size[0]), int(size[1])), dtype
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.device = torch.device(device) if device is not None else None
        self.model: torch.jit.ScriptModule | None = None
        self._ready_on: torch.device | None = None
        self._dtype = torch.float32
        self._said_refs = False

    def describe(self) -> str:
        """One line: the file, how it runs, what it ignores, its licence (logged at the first call)."""
        lo, hi = self.value_range
        licence = LICENCES.get(self.name, "the file's own")
        return (f"fixer {self.name}: TorchScript {self.path} | runs at {self.size[0]}x{self.size[1]} (bilinear there "
                f"and back), one image per call | values [{lo:g}, {hi:g}] | dtype: {str(self._dtype).replace('torch.', '')}"
                f" | reference view: none (references are ignored) | licence: {licence}")

    def _ready(self, device: torch.device) -> None:
        if self._ready_on == device:
            return
        self._dtype = resolve_dtype(self.dtype_name, device)
        if self.model is None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
                try:
                    self.model = torch.jit.load(str(self.path), map_location=device)
                except RuntimeError as err:
                    raise ValueError(f"fixer {self.name!r}: {self.path} does not load as TorchScript: "
                                     f"{str(err).strip().splitlines()[0]}") from err
        self.model = self.model.to(device=device, dtype=self._dtype).eval()
        if self._ready_on is None:
            log.info(self.describe())
        self._ready_on = device

    @torch.no_grad()
    def forward(self, images: Tensor, refs: Tensor | None = None) -> Tensor:
        """Fixes renders.

        Args:
            images: (B, 3, H, W) in [0, 1].
            refs: (B, K, 3, H', W') or None: ignored (said once in the log).

        Returns:
            (B, 3, H, W) in [0, 1], float32, on the images' device.

        Raises:
            ValueError: the model returned something else than one image of its input's shape.
            FixerOutputError: non-finite output, naming the fixer and the images.
        """
        device = self.device or images.device
        self._ready(device)
        if refs is not None and refs.numel() and not self._said_refs:
            log.info("fixer %s takes no reference view: the %d reference(s) per render are ignored", self.name,
                     refs.shape[1])
            self._said_refs = True
        lo, hi = self.value_range
        h, w = images.shape[-2:]
        outs = []
        for i in range(images.shape[0]):  # one image per call, as the export was traced
            x = _bilinear(images[i:i + 1].to(device, torch.float32), self.size)
            y = self.model(((x * (hi - lo)) + lo).to(self._dtype))
            if not isinstance(y, Tensor) or tuple(y.shape) != tuple(x.shape):
                got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
                raise ValueError(f"fixer {self.name!r}: returned {got} for an input of shape {tuple(x.shape)}; an image "
                                 "fixer returns its input's shape")
            outs.append(_bilinear(((y.float() - lo) / (hi - lo)).clamp(0, 1), (h, w)))
        out = torch.cat(outs)
        check_finite(out, self.name)
        return out.to(images.device)


def _bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 3, H, W) -> (B, 3, h, w), antialiased bilinear (Pillow's BILINEAR), clamped to [0, 1]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
