"""Options that moved into typed groups, old key -> new key, per class.

`GaussianSceneModule`, `PairDataModule` and `DifixModule` took their options flat; they now take
option groups (``init:``, ``lr:``, ``source:``, ``optimizer:``, ...). A config or command line that
still gives an old key is rejected by LightningCLI's parser; `renamed_hint` turns that rejection
into a message naming the new key (``difix3d.cli.DifixArgumentParser``).
"""
from __future__ import annotations

import ast
import re

__all__ = ["RENAMED_OPTIONS", "renamed_hint"]

_GAUSSIANS = {
    "sh_degree": "sh.degree", "sh_degree_interval": "sh.interval",
    "init_type": "init.type", "init_num_points": "init.num_points", "init_extent": "init.extent",
    "init_center": "init.center", "init_opacity": "init.opacity", "init_scale": "init.scale",
    "max_init_points": "init.max_points", "init_file": "init.file",
    "means_lr": "lr.means", "means_lr_final_factor": "lr.means_final_factor", "scales_lr": "lr.scales",
    "quats_lr": "lr.quats", "opacities_lr": "lr.opacities", "sh0_lr": "lr.sh0", "shN_lr": "lr.shN",
    "lr_decay_steps": "lr.decay_steps",
    "ssim_lambda": "loss.ssim_lambda", "opacity_reg": "loss.opacity_reg", "scale_reg": "loss.scale_reg",
    "backend": "rasterizer.backend", "near_plane": "rasterizer.near_plane", "far_plane": "rasterizer.far_plane",
    "eps2d": "rasterizer.eps2d",
}
_JSON = "(a JsonPairs source: source: {path: ...})"
_SYNTHETIC = "(a SyntheticPairs source: source: {clean_dir: ..., num_train: ...})"
_PAIRS = {
    "json_path": f"source.path {_JSON}", "train_order": f"source.train_order {_JSON}",
    "verify_images": f"source.verify_images {_JSON}", "bad_images": f"source.bad_images {_JSON}",
    "augment": f"source.augment {_JSON}",
    "clean_dir": f"source.clean_dir {_SYNTHETIC}", "num_train": f"source.num_train {_SYNTHETIC}",
    "num_val": f"source.num_val {_SYNTHETIC}", "degradations": f"source.degradations {_SYNTHETIC}",
    "degradation_strength": f"source.degradation_strength {_SYNTHETIC}",
    "degradation_probability": f"source.degradation_probability {_SYNTHETIC}",
    "max_ref_shift": f"source.max_ref_shift {_SYNTHETIC}",
    "predict_dir": "predict.renders (a RenderFolder: predict: {renders: ...})",
    "predict_ref_dir": "predict.references (a RenderFolder: predict: {renders: ..., references: ...})",
}
_DIFIX = {
    "w_l2": "loss.w_l2", "w_lpips": "loss.w_lpips", "w_gram": "loss.w_gram", "w_ssim": "loss.w_ssim",
    "gram_warmup_steps": "loss.gram_warmup_steps", "gram_crop_size": "loss.gram_crop_size",
    "gram_cross_batch": "loss.gram_cross_batch", "loss_on_references": "loss.on_references",
    "lr": "optimizer.lr", "skip_lr_scale": "optimizer.skip_lr_scale", "betas": "optimizer.betas",
    "weight_decay": "optimizer.weight_decay", "lr_schedule": "optimizer.schedule",
}
RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    "lightning_modules.scene.gaussians.module.GaussianSceneModule": _GAUSSIANS,
    "datamodules.pairs.datamodule.PairDataModule": _PAIRS,
    "lightning_modules.difix.training.module.DifixModule": _DIFIX,
}

_CLASS = re.compile(r"class_path ['\"]([\w.]+)['\"]")
_REJECTED = re.compile(r"(?:Option|Key|key) ['\"]([\w.]+)['\"]")
_GIVEN = re.compile(r"Given value: (.*)$", re.MULTILINE)


def _given_keys(message: str) -> tuple[set[str], set[str]]:
    """The options of each config the message quotes ("Given value: {...}"), and the values given
    as a whole (e.g. the old ``source: json``)."""
    keys, values = set(), set()
    for text in _GIVEN.findall(message):
        try:
            given = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            given = text.strip()  # a bare word, e.g. json
        if isinstance(given, dict):
            args = given.get("init_args", given)
            keys |= set(args) if isinstance(args, dict) else set()
        elif isinstance(given, str):
            values.add(given)
    return keys, values


def renamed_hint(message: str) -> str | None:
    """What an old key is now called, for each old key a parser error message rejects.

    Args:
        message: jsonargparse's error (it names the class_path and the option it did not accept).

    Returns:
        One line per renamed key ("GaussianSceneModule: means_lr is now lr.means"), or None when
        the message rejects no renamed key.
    """
    classes = [c for c in _CLASS.findall(message) if c in RENAMED_OPTIONS]
    if not classes:
        return None
    given, values = _given_keys(message)
    rejected = {k.rsplit(".", 1)[-1] for k in _REJECTED.findall(message)} | given
    lines = []
    for cls in dict.fromkeys(classes):
        name = cls.rsplit(".", 1)[-1]
        lines += [f"{name}: {old} is now {new}" for old, new in RENAMED_OPTIONS[cls].items() if old in rejected]
        if name == "PairDataModule" and values & {"json", "synthetic"}:
            lines.append(f"{name}: source is now an object: source: {{path: pairs.json}} (JsonPairs) or "
                         "source: {clean_dir: ...} (SyntheticPairs); the options of each kind go inside it")
    return "\n".join(dict.fromkeys(lines)) or None
