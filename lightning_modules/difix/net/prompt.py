"""Difix's text prompt: the reference code encodes "remove degradation" once with the frozen CLIP
text encoder (nv-tlabs/Difix3D `src/pipeline_difix.py`, `DifixPipeline.__call__`'s default)."""
DEFAULT_PROMPT = "remove degradation"
