"""TorchScript fixers the tests script and save: a few convolutions with the nvidia/Fixer export's
contract (one (1, 3, H, W) image in [-1, 1] in, the same shape out), and files whose graph calls
operators of a library that is not loaded (a stand-in test op, and Transformer Engine's
namespace `tex_ts`, whose TorchScript operators TE registers with TORCH_LIBRARY(tex_ts, m))."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import torch
from torch import nn

from helpers import REPO


class TinyTorchScriptFixer(nn.Module):
    """x + 0.2 * tanh(convs(x)), clamped to [-1, 1]: changes every image, keeps its shape."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 0.2 * torch.tanh(self.body(x))).clamp(-1.0, 1.0)


def script_module(module: nn.Module, path: Path) -> Path:
    """Scripts `module` and saves it at `path` (a TorchScript fixer file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, not gone
        torch.jit.script(module.eval()).save(str(path))
    return path


def write_tiny_torchscript(path: Path, seed: int = 0) -> Path:
    return script_module(TinyTorchScriptFixer(seed), path)


_NEEDS_OPS = """
import sys, warnings, torch
sys.path.insert(0, {tests!r})
import helpers.custom_ops  # noqa: F401  difix3d_test::shift
te = torch.library.Library("tex_ts", "DEF")  # a stand-in for Transformer Engine's operator
te.define("te_gemm_ts(Tensor x) -> Tensor")
te.impl("te_gemm_ts", lambda x: x, "CompositeExplicitAutograd")
warnings.simplefilter("ignore")

class Shift(torch.nn.Module):
    def forward(self, x):
        return torch.ops.difix3d_test.shift(x)

class Gemm(torch.nn.Module):
    def forward(self, x):
        return torch.ops.tex_ts.te_gemm_ts(x)

torch.jit.script(Shift()).save({shift!r})
torch.jit.script(Gemm()).save({gemm!r})
"""


def write_files_needing_operators(folder: Path) -> tuple[Path, Path]:
    """(a file calling difix3d_test::shift, one calling tex_ts::te_gemm_ts), scripted in another
    interpreter so that neither operator is registered in this one."""
    folder.mkdir(parents=True, exist_ok=True)
    shift, gemm = folder / "needs_shift.pt", folder / "needs_te.pt"
    script = folder / "write_them.py"  # a file: torch.jit.script reads the classes' source
    script.write_text(textwrap.dedent(_NEEDS_OPS.format(tests=str(REPO / "tests"), shift=str(shift), gemm=str(gemm))))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, timeout=300)
    return shift, gemm
