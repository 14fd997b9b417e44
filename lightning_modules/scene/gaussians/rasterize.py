"""The one rendering function of the project: gsplat on CUDA, pure torch elsewhere."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from lightning_modules.scene.gaussians.rasterize_torch import RENDER_MODES, rasterization_torch

Backend = Literal["auto", "gsplat", "torch"]
RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]


def render(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    backgrounds: Tensor | None = None,
    render_mode: RenderMode = "RGB",
    backend: Backend = "auto",
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    packed: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Rasterize 3D Gaussians into C images, as ``gsplat.rasterization``.

    Both backends follow gsplat 1.5.3 exactly (EWA projection with the clamped
    Jacobian, ``eps2d`` blur, pixel centres at +0.5, opacity-aware 3.33-sigma
    boxes, alpha clamped at 0.999 and dropped below 1/255, early stop at
    transmittance 1e-4, SH colours ``clamp_min(sh + 0.5, 0)``).

    Args:
        means: Centres in world space. (N, 3)
        quats: Rotations, wxyz, not necessarily normalised. (N, 4)
        scales: Activated (exp'd) scales. (N, 3)
        opacities: Activated (sigmoid'd) opacities. (N,)
        colors: SH coefficients (N, K, 3) if ``sh_degree`` is set, else RGB/features
            (N, D); a leading camera dimension (C, ...) is also accepted.
        viewmats: World-to-camera matrices, OpenCV axes. (C, 4, 4)
        Ks: Intrinsics in pixels. (C, 3, 3)
        width: Image width in pixels.
        height: Image height in pixels.
        sh_degree: SH degree to evaluate, or None for plain colours.
        near_plane: Gaussians nearer than this (camera z) are culled.
        far_plane: Gaussians farther than this are culled.
        backgrounds: Background colour per camera. (C, D) or None (black).
        render_mode: "RGB", "D" (accumulated depth), "ED" (expected depth =
            accumulated depth / alpha), "RGB+D" or "RGB+ED" (depth last).
        backend: "gsplat" (CUDA kernels), "torch" (CPU backend) or "auto"
            (gsplat when ``means`` is on a CUDA device, torch otherwise).
        eps2d: Low-pass added to the 2D covariance diagonal.
        radius_clip: Gaussians with both radii <= this (pixels) are skipped.
        packed: gsplat's packed mode (gsplat backend only).
        rasterize_mode: "classic" or "antialiased" (Mip-Splatting compensation).

    Returns:
        colors: (C, H, W, D), (C, H, W, 1) for "D"/"ED", (C, H, W, D + 1) for "RGB+D"/"RGB+ED".
        alphas: (C, H, W, 1).
        info: gsplat's meta dict; what the strategies read: ``means2d`` (C, N, 2)
            (call ``retain_grad()`` before backward; its grad is in pixels),
            ``radii`` (C, N, 2) int32 (0 = culled), ``width``, ``height``,
            ``n_cameras``, ``gaussian_ids`` (None unless packed), ``depths`` (C, N),
            ``opacities`` (C, N), ``conics`` (C, N, 3).

    Raises:
        ValueError: Unknown backend or render mode, gsplat asked for on CPU
            tensors, or packed mode asked of the torch backend.
    """
    if backend not in ("auto", "gsplat", "torch"):
        raise ValueError(f"backend must be 'auto', 'gsplat' or 'torch', got {backend!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    _check_shapes(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree, backgrounds)
    if backend == "auto":
        backend = "gsplat" if means.is_cuda else "torch"

    if backend == "gsplat":
        if not means.is_cuda:
            raise ValueError(
                "backend='gsplat' needs CUDA tensors (gsplat's kernels do not run on CPU); "
                "use backend='torch' or 'auto'"
            )
        from gsplat import rasterization  # imported here: compiles CUDA kernels on first use

        return rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip,
            eps2d=eps2d, sh_degree=sh_degree, packed=packed, backgrounds=backgrounds,
            render_mode=render_mode, rasterize_mode=rasterize_mode,
        )

    if packed:
        raise ValueError("the torch backend returns unpacked (C, N, ...) info; pass packed=False")
    return rasterization_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
        sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode,
        rasterize_mode=rasterize_mode,
    )


def _check_shapes(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, sh_degree: int | None, backgrounds: Tensor | None,
) -> None:
    """Raise a ValueError naming the argument whose shape does not fit."""
    N = means.shape[0] if means.dim() == 2 else -1
    C = viewmats.shape[0] if viewmats.dim() == 3 else -1
    expected = {
        "means": (means, (N, 3)),
        "quats": (quats, (N, 4)),
        "scales": (scales, (N, 3)),
        "opacities": (opacities, (N,)),
        "viewmats": (viewmats, (C, 4, 4)),
        "Ks": (Ks, (C, 3, 3)),
    }
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape or -1 in shape:
            raise ValueError(f"render: {name} has shape {tuple(t.shape)}, expected {shape} "
                             "(N Gaussians from means (N, 3), C cameras from viewmats (C, 4, 4))")
    if sh_degree is None:
        ok = (colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and colors.shape[:2] == (C, N))
        want = "(N, D) or (C, N, D) when sh_degree is None"
    else:
        ok = colors.shape[-1] == 3 and (
            (colors.dim() == 3 and colors.shape[0] == N) or (colors.dim() == 4 and colors.shape[:2] == (C, N))
        ) and (sh_degree + 1) ** 2 <= colors.shape[-2]
        want = f"(N, K, 3) or (C, N, K, 3) with K >= {(sh_degree + 1) ** 2} for sh_degree={sh_degree}"
    if not ok:
        raise ValueError(f"render: colors has shape {tuple(colors.shape)}, expected {want} (N={N}, C={C})")
    if backgrounds is not None and (backgrounds.dim() != 2 or backgrounds.shape[0] != C):
        raise ValueError(f"render: backgrounds has shape {tuple(backgrounds.shape)}, expected (C={C}, D)")
