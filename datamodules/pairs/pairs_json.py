"""The pairs JSON and its items: reading, per-file validation, output sizes.

The file is the reference code's data file (nv-tlabs/Difix3D `--dataset_path`):
`{"train": ..., "test": ...}` where each split is either a dict keyed by id (the
reference layout) or a list of items, each
`{"image": degraded render, "target_image": clean image, "ref_image": path or [paths],
"prompt": str}`. Relative paths resolve against the JSON file's folder. Used by
`datamodules.pairs.datamodule.PairDataModule`; the datasets are in `datamodules.pairs.datasets`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from datamodules.files.image_io import read_image_size
from datamodules.pairs.record import DEFAULT_PROMPT, PairRecord

SizeArg = int | tuple[int, int] | None


class PairDataError(ValueError):
    """Bad pair data; the message names the JSON file (or folder), the entry and the file."""


@dataclass
class PairItem:
    """One entry of a pairs source, paths already resolved.

    Attributes:
        name: output name (dict key, item "name"/"id", or image stem).
        entry: where it came from, for messages: "train['id']" or "test[3]".
        image: degraded render.
        target: clean image, None for predict-only folders.
        refs: exactly K reference paths (shorter lists padded by repeating the last).
        prompt: text prompt.
        size_wh: (width, height) of the image, filled by validation.
        group: "scene/strategy" of a curated item (its "scene" and "strategy" fields, as
            callbacks.curation.pair_writer.PairWriter writes them), None for other items.
    """

    name: str
    entry: str
    image: Path
    target: Path | None
    refs: list[Path]
    prompt: str
    size_wh: tuple[int, int] | None = field(default=None)
    group: str | None = None


def _as_hw(size: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    if isinstance(size, int):
        hw = (size, size)
    else:
        hw = tuple(int(s) for s in size)
        if len(hw) != 2:
            raise ValueError(f"{what} must be an int or (height, width), got {size}")
    if min(hw) <= 0:
        raise ValueError(f"{what} must be positive, got {size}")
    return hw  # type: ignore[return-value]


def output_size(size_wh: tuple[int, int], resolution: SizeArg) -> tuple[int, int]:
    """(height, width) after resizing an image of `size_wh` = (width, height).

    resolution: None keeps the native size; (H, W) resizes exactly; an int resizes the
    shorter side to it, keeping the aspect ratio (torchvision's Resize(int) convention).
    """
    width, height = size_wh
    if resolution is None:
        return height, width
    if isinstance(resolution, int):
        scale = resolution / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return _as_hw(resolution, "resolution")


def read_pairs_json(
    json_path: str | os.PathLike,
    split: str,
    num_refs: int,
    require_target: bool = True,
    default_prompt: str = DEFAULT_PROMPT,
) -> list[PairItem]:
    """Reads one split of a pairs JSON (list or dict-keyed layout) into PairItems.

    Args:
        json_path: the JSON file.
        split: "train", "val", "test".
        num_refs: references per item K; items with fewer repeat their last one, extra
            ones are dropped. K = 0 ignores "ref_image".
        require_target: "target_image" must be present.
        default_prompt: used when an item has no "prompt".

    Returns:
        The items, in file order.

    Raises:
        PairDataError: unreadable JSON, missing/empty split, missing key, bad value; the
            message names the file, split and entry.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise PairDataError(f"{json_path}: pairs JSON file not found")
    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PairDataError(f"{json_path}: not a readable JSON file ({error})") from error
    if not isinstance(data, dict) or split not in data:
        found = list(data) if isinstance(data, dict) else type(data).__name__
        raise PairDataError(f"{json_path}: no {split!r} split (top level has {found}); expected {{\"train\": ..., \"test\": ...}}")
    raw = data[split]
    if isinstance(raw, dict):
        entries = [(f"{split}[{key!r}]", str(key), value) for key, value in raw.items()]
    elif isinstance(raw, list):
        entries = [(f"{split}[{i}]", None, value) for i, value in enumerate(raw)]
    else:
        raise PairDataError(f"{json_path}: split {split!r} must be a list or a dict of items, got {type(raw).__name__}")
    if not entries:
        raise PairDataError(f"{json_path}: split {split!r} is empty")

    root = json_path.parent

    def resolve(value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else root / path

    items: list[PairItem] = []
    for entry, key_name, value in entries:
        try:
            record = PairRecord.from_json(value, f"{json_path}: entry {entry}", require_target, num_refs > 0, default_prompt)
        except ValueError as error:
            raise PairDataError(str(error)) from None
        image = resolve(record.image)
        refs: list[Path] = []
        if num_refs > 0:
            refs = [resolve(r) for r in record.ref_image][:num_refs]
            refs += [refs[-1]] * (num_refs - len(refs))
        target = resolve(record.target_image) if record.target_image is not None else None
        name = key_name or record.name or image.stem
        group = f"{record.scene}/{record.strategy}" if record.scene and record.strategy else None
        items.append(PairItem(name=name, entry=entry, image=image, target=target, refs=refs, prompt=record.prompt, group=group))
    _deduplicate_names(items)
    return items


def order_groups(items: list[PairItem], order: list[str], origin: Path, split: str) -> list[PairItem]:
    """The items regrouped by curation ("scene/strategy") in `order`; file order within a group.

    Concurrent curations append their groups to one pairs JSON in the order they finish, so
    file order can change from run to run while the pairs do not; a fixed order keeps the
    training order (and the shuffled batches) the same.

    Raises:
        PairDataError: an item has no group, a group is missing from `order`, or `order`
            names a group the split does not have (each names `origin` and `split`).
    """
    ungrouped = [it.entry for it in items if it.group is None]
    if ungrouped:
        raise PairDataError(f"{origin}: {split} entry {ungrouped[0]} has no \"scene\" and \"strategy\": an order by "
                            f"curation needs them on every item (PairWriter writes them)")
    found = list(dict.fromkeys(it.group for it in items))
    unlisted = [g for g in found if g not in order]
    absent = [g for g in order if g not in found]
    if unlisted or absent or len(set(order)) != len(order):
        raise PairDataError(f"{origin}: the {split} order must list each scene/strategy group of the split once: "
                            f"not listed {unlisted}, listed but not in the split {absent}, listed twice "
                            f"{sorted({g for g in order if order.count(g) > 1})}; the split has {found}")
    rank = {g: i for i, g in enumerate(order)}
    return sorted(items, key=lambda it: rank[it.group])  # stable: file order within a group


def _deduplicate_names(items: list[PairItem]) -> None:
    """Appends the position to names that repeat, so output files never collide."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.name] = counts.get(item.name, 0) + 1
    for index, item in enumerate(items):
        if counts[item.name] > 1:
            item.name = f"{item.name}_{index:05d}"


def validate_items(items: list[PairItem], origin: Path, resolution: SizeArg, crop_hw: tuple[int, int] | None) -> None:
    """Checks every file of every item from its header (no decoding) and fills size_wh.

    Checks: the file exists and is an image; target has the image's size; references have
    it too unless `resolution` is set (then they are resized); `crop_hw` fits the resized
    image.

    Raises:
        PairDataError: naming `origin`, the entry and the file.
    """
    for item in items:
        def size_of(path: Path, role: str) -> tuple[int, int]:
            try:
                return read_image_size(path)
            except FileNotFoundError:
                raise PairDataError(f"{origin}: entry {item.entry}: {role} file not found: {path}") from None
            except ValueError as error:
                raise PairDataError(f"{origin}: entry {item.entry}: {role} is not a readable image: {path} ({error.__cause__ or error})") from None

        image_wh = size_of(item.image, "image")
        if item.target is not None:
            target_wh = size_of(item.target, "target_image")
            if target_wh != image_wh:
                raise PairDataError(
                    f"{origin}: entry {item.entry}: size mismatch: image {item.image} is {image_wh[0]}x{image_wh[1]} "
                    f"but target_image {item.target} is {target_wh[0]}x{target_wh[1]} (pixels must align)"
                )
        for ref in dict.fromkeys(item.refs):
            ref_wh = size_of(ref, "ref_image")
            if resolution is None and ref_wh != image_wh:
                raise PairDataError(
                    f"{origin}: entry {item.entry}: size mismatch: image {item.image} is {image_wh[0]}x{image_wh[1]} "
                    f"but ref_image {ref} is {ref_wh[0]}x{ref_wh[1]}; set `resolution` to resize all views"
                )
        item.size_wh = image_wh
        if crop_hw is not None:
            out_h, out_w = output_size(image_wh, resolution)
            if crop_hw[0] > out_h or crop_hw[1] > out_w:
                raise PairDataError(
                    f"{origin}: entry {item.entry}: crop_size {crop_hw[0]}x{crop_hw[1]} (HxW) is larger than "
                    f"image {item.image} ({out_h}x{out_w} after resolution={resolution})"
                )


def _check_batchable(items: list[PairItem], origin: Path, resolution: SizeArg, crop_hw: tuple[int, int] | None, batch_size: int, split: str) -> None:
    """Batches need one size: fail early (not in collate) when items would differ."""
    if batch_size <= 1 or crop_hw is not None or (resolution is not None and not isinstance(resolution, int)):
        return
    first = items[0]
    first_hw = output_size(first.size_wh, resolution)
    for item in items[1:]:
        hw = output_size(item.size_wh, resolution)
        if hw != first_hw:
            raise PairDataError(
                f"{origin}: {split} batch_size {batch_size} needs one image size, but entry {first.entry} "
                f"({first.image}) gives {first_hw} and entry {item.entry} ({item.image}) gives {hw} (HxW); "
                "set resolution=(H, W) or crop_size, or use batch size 1"
            )
