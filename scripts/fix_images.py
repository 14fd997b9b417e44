"""Fix rendered images with a fixer: Difix (NVIDIA's published model by default) or a TorchScript one.

    python scripts/fix_images.py --images renders/ --refs refs/ --out fixed/
    python scripts/fix_images.py --fixer nvidia/difix --images a.png b.png --out fixed/
    python scripts/fix_images.py --fixer outputs/difix/last.ckpt --images renders/ --refs ref.png \\
        --out fixed/ --size 576 1024 --latent sample --device cuda --dtype bfloat16
    python scripts/fix_images.py --fixer nvidia/Fixer --images renders/ --out fixed/     # no references

--fixer: any fixer name (`lightning_modules/difix/fixers/sources.py`: "nvidia/difix_ref" (default),
"nvidia/difix", a local folder of either, a reference model_*.pkl, a DifixModule .ckpt,
exported weights, "tiny"; "nvidia/Fixer", its folder or any TorchScript .pt file); the first
line printed says what was loaded and how it runs.
--images: files and/or folders (their image files, sorted). --refs
(optional): one image for all, a folder holding a file of the same name (any image suffix) per
image, or one file per image in order. Each fixed image is written as OUT/<name>.png at the
input's size (without --out: beside the input, in <its folder>/fixed/), atomically; an output
that would replace an input or reference is refused.
--size: "auto" (default): the reference pipeline's pre-processing for NVIDIA's models (Lanczos
to a multiple of 8 and back), the fixer's own otherwise; "reference", "pad", "resize"; or H W,
e.g. 576 1024 as the reference's inference_difix.py (Lanczos there and back). A TorchScript fixer
runs at "auto" (nvidia/Fixer's 576 1024) or H W (bilinear there and back), with the values
--value-range LOW HIGH (default -1 1, the Fixer's) and ignores --refs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (shared-core CPUs)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from datamodules.files.image_io import IMAGE_EXTENSIONS, list_images, load_image, save_image  # noqa: E402
from datamodules.files.temp_files import MIN_FREE_BYTES, check_free_space, check_writable, remove_stale  # noqa: E402
from lightning_modules.console import console_logging  # noqa: E402
from lightning_modules.difix.fixers.errors import FixerError  # noqa: E402
from lightning_modules.difix.fixers.ready import ReadyFixer  # noqa: E402
from lightning_modules.difix.fixers.spec import FixerSpec  # noqa: E402


def expand_images(items: list[str], what: str) -> list[Path]:
    """Files and folders (their image files) -> list of image files; fails naming a bad item."""
    files: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            files.extend(list_images(path))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{what} {item}: no such file or folder")
    return files


def match_references(images: list[Path], refs: list[str] | None) -> list[Path | None]:
    """One reference (or None) per image, by the rules in the module docstring."""
    if not refs:
        return [None] * len(images)
    if len(refs) == 1 and Path(refs[0]).expanduser().is_dir():
        folder = Path(refs[0]).expanduser()
        out: list[Path | None] = []
        for image in images:
            found = [folder / (image.stem + s) for s in IMAGE_EXTENSIONS if (folder / (image.stem + s)).is_file()]
            if not found:
                raise FileNotFoundError(f"--refs {folder}: no reference named {image.stem}.* for image {image}")
            out.append(found[0])
        return out
    files = expand_images(refs, "--refs")
    if len(files) == 1:
        return [files[0]] * len(images)
    if len(files) != len(images):
        raise ValueError(f"--refs: {len(files)} references for {len(images)} images; give one, a folder, or one per image")
    return list(files)


def output_paths(images: list[Path], out_dir: Path | None, protected: set[Path]) -> list[Path]:
    """OUT/<stem>.png per image (OUT = <image folder>/fixed without --out); refuses duplicates and
    anything that would replace an input."""
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: is a file; name a folder (it is created when missing)")
    outs = [(out_dir or image.parent / "fixed") / f"{image.stem}.png" for image in images]
    seen: dict[Path, Path] = {}
    for image, out in zip(images, outs):
        resolved = out.resolve()
        if resolved in protected:
            raise ValueError(f"--out {out.parent}: writing {out} would overwrite an input image; choose another folder")
        if resolved in seen:
            raise ValueError(f"--images {seen[resolved]} and {image} would both be written to {out}; rename one")
        seen[resolved] = image
    return outs


def input_notes(images: list[Path]) -> list[str]:
    """What the fixer will not keep of the inputs: alpha channels and bit depths above 8."""
    from PIL import Image

    alpha, deep = [], []
    for path in images:
        with Image.open(path) as im:
            if "A" in im.getbands() or "transparency" in im.info:
                alpha.append(path.name)
            # PNG's IHDR holds the bit depth (PIL opens 16-bit RGB at 8 bits and says nothing).
            if im.format == "PNG" and path.read_bytes()[24:25] == b"\x10" or im.mode.startswith("I;16"):
                deep.append(path.name)
    notes = []
    if alpha:
        notes.append(f"{len(alpha)} image(s) have an alpha channel, which the fixer does not see and the output "
                     f"does not keep (e.g. {alpha[0]}); composite them over their background first to choose it")
    if deep:
        notes.append(f"{len(deep)} image(s) have 16 bits per channel (e.g. {deep[0]}); they are fixed and written "
                     "at 8 bits")
    return notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixer", default="nvidia/difix_ref", help="fixer spec (default: nvidia/difix_ref)")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--refs", nargs="+", default=None, help="reference image, folder, or one per image")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <image folder>/fixed)")
    parser.add_argument("--size", nargs="+", default=["auto"], metavar="MODE|H W",
                        help="auto (default), reference, pad, resize, or H W (reference code: 576 1024)")
    parser.add_argument("--latent", choices=["mode", "sample"], default=None,
                        help="VAE latent: mode or sample (default: the fixer's own, mode)")
    parser.add_argument("--reference-attention", choices=["on", "off"], default=None,
                        help="joint attention over image and reference (default: what the weights are)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                        help="weights' dtype (auto: bfloat16 on CUDA, float32 on the CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --latent sample")
    parser.add_argument("--value-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="TorchScript fixers: the values the model takes and returns (default: -1 1)")
    return parser.parse_args(argv)


def fixer_spec(args: argparse.Namespace) -> FixerSpec:
    """The FixerSpec the command line names (fails naming the option)."""
    size: str | tuple[int, int]
    if len(args.size) == 1 and not args.size[0].isdigit():
        size = args.size[0]
    elif len(args.size) == 2 and all(s.isdigit() for s in args.size):
        size = (int(args.size[0]), int(args.size[1]))
    else:
        raise ValueError(f"--size {' '.join(args.size)}: give auto, reference, pad, resize, or H W")
    attention = None if args.reference_attention is None else args.reference_attention == "on"
    value_range = tuple(args.value_range) if args.value_range is not None else None
    return FixerSpec(name=args.fixer, size=size, dtype=args.dtype, device=args.device, latent=args.latent,
                     reference_attention=attention, value_range=value_range)


def main(argv: list[str] | None = None) -> list[Path]:
    """Runs the command; returns the written files."""
    args = parse_args(argv)
    console_logging()
    fixer = ReadyFixer(fixer_spec(args), batch_size=1)
    fixer.check()  # before reading anything large
    images = expand_images(args.images, "--images")
    refs = match_references(images, args.refs)
    protected = {p.resolve() for p in images} | {p.resolve() for p in refs if p is not None}
    outs = output_paths(images, args.out, protected)
    for folder in sorted({out.parent for out in outs}):
        # Before the fixer loads (minutes for the published one): a full or read-only output
        # folder is named now. The PNGs take about what their inputs take (more for JPEG inputs).
        what = "--out" if args.out is not None else "output folder"
        need = sum(image.stat().st_size for image, out in zip(images, outs) if out.parent == folder)
        check_writable(folder, what)
        check_free_space(folder, max(need, MIN_FREE_BYTES), what, "the fixed images")
        remove_stale(folder)  # temporary PNGs of a killed earlier run
    for note in input_notes(images):
        print(f"fix_images: {note}", file=sys.stderr)
    torch.manual_seed(args.seed)
    written = []
    for image_path, ref_path, out in tqdm(list(zip(images, refs, outs)), desc="fixing", unit="image"):
        image = load_image(image_path)
        ref = load_image(ref_path)[None, None] if ref_path is not None else None
        fixed = fixer(image[None], ref)[0]
        written.append(save_image(fixed, out))
    print(f"wrote {len(written)} fixed image(s) to {sorted({str(p.parent) for p in written})}")
    return written


if __name__ == "__main__":
    try:
        main()
    except (FixerError, OSError, ValueError, KeyError) as err:  # said in one line, not a traceback
        sys.exit(f"fix_images: {err}")
