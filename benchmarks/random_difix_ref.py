"""A random-weight fixer folder in NVIDIA's published ``nvidia/difix_ref`` layout, for runs that
need a fixer of the real size without its download (the GPU check: the user's path, a training
step). Written by the project's exporter (``loading/export_published.py``), so the fixer then
loads through the same loader a user's ``hf download nvidia/difix_ref`` goes through.

    python benchmarks/random_difix_ref.py --out /tmp/difix_ref_sd-turbo              # SD-Turbo size, ~5.2 GB
    python benchmarks/random_difix_ref.py --config tiny --out /tmp/difix_ref_tiny    # the tests' tiny model

SD-Turbo size: its UNet and VAE (``net/architectures.py``) and SD 2.x's text encoder (below),
with the byte-level tokenizer of the tiny model (the real one is a 49k-entry BPE file on the
hub; a random encoder gives a random prompt embedding with either). An existing complete folder
of the same architecture is kept (the exporter writes a folder whole or not at all).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_modules.difix.net.architectures import CONFIGS, TINY_TEXT_ENCODER  # noqa: E402

# stabilityai/stable-diffusion-2(-1)'s text_encoder/config.json, which SD-Turbo (distilled from SD
# 2.1) shares: OpenCLIP ViT-H's text tower without its last layer, 340 M parameters.
SD_TURBO_TEXT_ENCODER = {
    "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512,
    "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}  # fmt: skip
TEXT_ENCODERS = {"tiny": TINY_TEXT_ENCODER, "sd-turbo": SD_TURBO_TEXT_ENCODER}


def is_written(folder: Path, config: str) -> bool:
    """A complete folder of this architecture is there (the UNet's block widths tell them apart)."""
    unet = folder / "unet" / "config.json"
    if not (folder / "model_index.json").is_file() or not unet.is_file():
        return False
    return json.loads(unet.read_text()).get("block_out_channels") == CONFIGS[config]["unet"]["block_out_channels"]


def write_random_difix_ref(folder: Path, config: str = "sd-turbo", seed: int = 0) -> dict:
    """Writes (or keeps) the folder; returns what was done and how long it took."""
    start = time.perf_counter()
    if is_written(folder, config):
        return {"folder": str(folder), "config": config, "written": False, "seconds": 0.0}
    from lightning_modules.difix.loading.base_models import net_from_components
    from lightning_modules.difix.loading.export_published import save_published_folder
    from lightning_modules.difix.net.architectures import build_components

    arch = {**CONFIGS[config], "text_encoder": TEXT_ENCODERS[config]}
    components = build_components(arch, seed=seed)
    encoder, tokenizer = components["text_encoder"], components["tokenizer"]
    net = net_from_components(dict(components), base={"kind": "config", "config": arch, "seed": seed},
                              provenance={"layout": f"random {config} weights (seed {seed})"})
    save_published_folder(net, folder, encoder, tokenizer, multiview=True)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"folder": str(folder), "config": config, "written": True, "gib": round(size / 2**30, 2),
            "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the folder to write")
    p.add_argument("--config", choices=sorted(TEXT_ENCODERS), default="sd-turbo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write what was done here")
    a = p.parse_args(argv)
    result = write_random_difix_ref(a.out, a.config, a.seed)
    print(json.dumps(result))
    if a.json is not None:
        from datamodules.files.json_io import write_json_atomic

        write_json_atomic(a.json, result, indent=2)
    return result


if __name__ == "__main__":
    main()
