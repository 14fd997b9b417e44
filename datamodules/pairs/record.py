"""PairRecord: one item of a pairs JSON, the one type the pair writer writes and
PairDataModule reads (``read_pairs_json``).

Layout of an item (the reference code's keys, plus the curation provenance)::

    {"image": degraded render, "target_image": clean image, "ref_image": [paths] (or one path),
     "prompt": str, "name": str, "scene", "strategy", "source", "step", "fraction", "view",
     "ref_views"}

Only ``image`` is always required; paths are relative to the JSON file's folder (or absolute).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PairRecord", "DEFAULT_PROMPT"]

# The "prompt" an item carries when its JSON gives none: the reference code's pairs format always
# holds Difix's prompt (the fixer itself encodes its own, `lightning_modules.difix.net.prompt`).
DEFAULT_PROMPT = "remove degradation"
_PROVENANCE = ("scene", "strategy", "source", "step", "fraction", "view", "ref_views")


@dataclass
class PairRecord:
    """One pairs.json item; paths as written (relative to the JSON's folder, or absolute).

    Attributes:
        image: degraded render.
        target_image: clean image (None: predict-only items).
        ref_image: reference images (nearest fitted views), possibly empty.
        prompt: text prompt.
        name: item name (None: the key of a dict-layout split, "id", or the image stem).
        scene: source scene name (curation).
        strategy: curation strategy ("sparse", "underfit", "cross", "cycle").
        source: the scene folder the views came from.
        step: training step of the snapshot.
        fraction: fraction of the schedule (underfitting), or None.
        view: name of the rendered camera.
        ref_views: names of the reference cameras.
    """

    image: str
    target_image: str | None = None
    ref_image: list[str] = field(default_factory=list)
    prompt: str = DEFAULT_PROMPT
    name: str | None = None
    scene: str | None = None
    strategy: str | None = None
    source: str | None = None
    step: int | None = None
    fraction: float | None = None
    view: str | None = None
    ref_views: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object (keys with None values left out, except ``fraction``)."""
        doc = asdict(self)
        return {k: v for k, v in doc.items() if v is not None or k == "fraction" and self.strategy is not None}

    @classmethod
    def from_json(cls, value: Any, where: str, require_target: bool = True, require_refs: bool = True,
                  default_prompt: str = DEFAULT_PROMPT) -> PairRecord:
        """Parses and checks one item.

        Args:
            value: the JSON value of the item.
            where: "<file>: entry <entry>", the prefix of every error message.
            require_target: "target_image" must be present.
            require_refs: "ref_image" must be present (a path or a non-empty list of paths).
            default_prompt: used when the item has no "prompt".

        Raises:
            ValueError: a missing key or a value of the wrong type, naming ``where`` and the key.
        """
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object with 'image', 'target_image', 'ref_image', 'prompt'")
        required = ["image"] + (["target_image"] if require_target else []) + (["ref_image"] if require_refs else [])
        for key in required:
            if key not in value:
                raise ValueError(f"{where}: missing key {key!r} (has {sorted(value)})")

        def path(key: str, raw: Any) -> str:
            if not isinstance(raw, str) or not raw:
                raise ValueError(f"{where}: {key!r} must be a non-empty path string, got {raw!r}")
            return raw

        refs: list[str] = []
        if "ref_image" in value:
            raw_refs = value["ref_image"]
            raw_refs = [raw_refs] if isinstance(raw_refs, str) else raw_refs
            if not isinstance(raw_refs, list) or (require_refs and not raw_refs):
                raise ValueError(f"{where}: 'ref_image' must be a path or a non-empty list of paths, got {value['ref_image']!r}")
            refs = [path("ref_image", r) for r in raw_refs]
        prompt = value.get("prompt", default_prompt)
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: 'prompt' must be a string, got {prompt!r}")
        name = value.get("name") or value.get("id")
        return cls(
            image=path("image", value["image"]),
            target_image=path("target_image", value["target_image"]) if "target_image" in value else None,
            ref_image=refs,
            prompt=prompt,
            name=None if name is None else str(name),
            **{k: value.get(k) for k in _PROVENANCE},
        )
