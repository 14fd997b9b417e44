"""Fix rendered images with a Difix fixer (NVIDIA's published model by default).

    python scripts/fix_images.py --images renders/ --refs refs/ --out fixed/
    python scripts/fix_images.py --fixer nvidia/difix --images a.png b.png --out fixed/
    python scripts/fix_images.py --fixer outputs/difix/last.ckpt --images renders/ --refs ref.png \\
        --out fixed/ --resize-to 576 1024 --latent sample --device cuda --dtype bfloat16

--fixer: anything `callbacks.fixer_loading.load_fixer` accepts ("nvidia/difix_ref" (default),
"nvidia/difix", a local folder of either, a reference model_*.pkl, a DifixModule .ckpt,
exported weights, "tiny"). --images: files and/or folders (their image files, sorted). --refs
(optional): one image for all, a folder holding a file of the same name (any image suffix) per
image, or one file per image in order. Each fixed image is written as OUT/<name>.png at the
input's size (without --out: beside the input, in <its folder>/fixed/), atomically; an output
that would replace an input or reference is refused.
--resize-to 576 1024 runs the fixer at the reference code's resolution (antialiased resize
there and back); by default it runs at the image's size (padded to a multiple of 64).
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

from callbacks.fixer_loading import load_fixer, validate_fixer_spec  # noqa: E402
from datamodules.image_io import IMAGE_EXTENSIONS, list_images, load_image, save_image  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixer", default="nvidia/difix_ref", help="fixer spec (default: nvidia/difix_ref)")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--refs", nargs="+", default=None, help="reference image, folder, or one per image")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <image folder>/fixed)")
    parser.add_argument("--resize-to", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="run the fixer at H x W (reference code: 576 1024)")
    parser.add_argument("--latent", choices=["mode", "sample"], default="mode")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="autocast dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed for --latent sample")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    """Runs the command; returns the written files."""
    args = parse_args(argv)
    validate_fixer_spec(args.fixer)  # before reading anything large
    images = expand_images(args.images, "--images")
    refs = match_references(images, args.refs)
    protected = {p.resolve() for p in images} | {p.resolve() for p in refs if p is not None}
    outs = output_paths(images, args.out, protected)
    device = torch.device(args.device)
    fixer = load_fixer(args.fixer, resize_to=tuple(args.resize_to) if args.resize_to else None, latent=args.latent)
    fixer = fixer.eval().requires_grad_(False).to(device)
    torch.manual_seed(args.seed)
    autocast = torch.autocast(device.type, dtype=DTYPES[args.dtype], enabled=args.dtype != "float32")
    written = []
    for image_path, ref_path, out in tqdm(list(zip(images, refs, outs)), desc="fixing", unit="image"):
        image = load_image(image_path).to(device)
        ref = load_image(ref_path).to(device)[None, None] if ref_path is not None else None
        with torch.no_grad(), autocast:
            fixed = fixer(image[None], ref)[0].float()
        written.append(save_image(fixed, out))
    print(f"wrote {len(written)} fixed image(s) to {sorted({str(p.parent) for p in written})}")
    return written


if __name__ == "__main__":
    main()
