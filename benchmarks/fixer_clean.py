"""Does the fixer leave clean content alone? PSNR / SSIM of fixer(clean image) vs the clean image.

    python benchmarks/fixer_clean.py --fixer outputs/demo/fixer/best.ckpt
    python benchmarks/fixer_clean.py --prior outputs/demo/prior/last.ckpt    # the prior's autoencoder

Clean images come from scenes the fixer never trained on: ray-cast views of procedural scenes
(`--scene-seeds`, default the demo's held-out scene 7 and the prior's held-out 900/901), each
fixed with its ring neighbour as the reference view, and, when scikit-image is installed,
centre crops of photos held out of the prior corpus (`--photos`, no reference). Prints one
line per set and writes JSON (`--out`). A fixer that fixes without damaging should stay
>= 26 dB here (issue 12); the prior rows show what the bottleneck / skips allow.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure  # noqa: E402

from datamodules.files.image_io import load_image  # noqa: E402
from datamodules.files.json_io import write_json_atomic  # noqa: E402
from datamodules.pairs.prior_corpus import package_data_images, pyramid, render_scene_views  # noqa: E402
from lightning_modules.difix.loading.builders import net_from_checkpoint


def clean_sets(scene_seeds: list[int], photos: list[str], size: int, views: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """{name: (images (N, 3, S, S), refs (N, 1, 3, S, S) or None)} of clean unseen images."""
    sets: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for seed in scene_seeds:
        imgs = render_scene_views(seed, views, size)
        sets[f"scene_{seed}"] = (imgs, imgs.roll(-1, dims=0)[:, None])  # neighbour on the ring
    files = [p for p in package_data_images("skimage", "data") if p.stem in set(photos)]
    if files:
        crops = []
        for path in files:
            for level in pyramid(load_image(path), [size, int(size * 1.5)], size):
                h, w = level.shape[-2:]
                crops.append(level[:, (h - size) // 2 : (h + size) // 2, (w - size) // 2 : (w + size) // 2])
        sets["photos"] = (torch.stack(crops), None)
    return sets


def load_model(args: argparse.Namespace):
    """A callable images (N,3,H,W), refs -> (N,3,H,W) in [0, 1] and its label."""
    if args.prior:
        from lightning_modules.difix.loading.from_prior import net_from_prior

        net = net_from_prior(args.prior, vae_lora_rank=0, reference_attention=False).eval()

        def autoencode(images: torch.Tensor, refs: torch.Tensor | None, skips: bool) -> torch.Tensor:
            x = images * 2 - 1
            with net.skips.capture() as acts:
                z = net.vae.encode(x).latent_dist.mode()
            if skips:
                with net.skips.inject(list(acts)):
                    return (net.vae.decode(z).sample.clamp(-1, 1) + 1) / 2
            return (net.vae.decode(z).sample.clamp(-1, 1) + 1) / 2

        return {"prior_vae": lambda i, r: autoencode(i, r, False), "prior_vae_skips": lambda i, r: autoencode(i, r, True),
                "prior_difix_path": lambda i, r: net(i, None)}
    from lightning_modules.difix.net.net import DifixNet

    net = net_from_checkpoint(args.fixer).eval()
    return {"fixer": lambda i, r: net(i, r)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--fixer", help="DifixModule checkpoint / exported fixer")
    which.add_argument("--prior", help="DifixPriorModule checkpoint")
    parser.add_argument("--scene-seeds", type=int, nargs="*", default=[7, 900, 901])
    parser.add_argument("--photos", nargs="*", default=["coffee", "rocket", "motorcycle_left"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()

    models = load_model(args)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with torch.no_grad():
        for set_name, (images, refs) in clean_sets(args.scene_seeds, args.photos, args.size, args.views).items():
            for model_name, run in models.items():
                out = run(images, refs).float()
                row = {"psnr": float(peak_signal_noise_ratio(out, images, data_range=1.0)),
                       "ssim": float(structural_similarity_index_measure(out, images, data_range=1.0)),
                       "n": int(images.shape[0])}
                results.setdefault(model_name, {})[set_name] = row
                print(f"{model_name:<18} {set_name:<12} n={row['n']:<3} PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.4f}")
    if args.out:
        write_json_atomic(args.out, results)


if __name__ == "__main__":
    main()
