"""Fixer's single denoising step, as its forward computes it.

nv-tlabs/Fixer (`Pix2Pix_Turbo.forward`) calls cosmos-predict2's `Text2ImagePipeline.denoise`
once on the encoded render with sigma = timestep / 1000, the timestep cast to the latent's dtype
first (so in bfloat16 every coefficient below is rounded to bfloat16, as there). The pipeline's
preconditioning is `RectifiedFlowScaling` (`module/denoiser_scaling.py`, t_scaling_factor 1):

    t = sigma / (sigma + 1);  c_skip = 1 - t;  c_out = -t;  c_in = 1 - t;  c_noise = t
    x0 = c_skip * x + c_out * DiT(c_in * x, c_noise)

(a rectified-flow velocity model read at the point x_t = (1 - t) x of the EDM-style input).
At timestep 250: sigma 0.25, t 0.2. No noise is added: the render's latent is the input. diffusers
has no scheduler with this parametrisation at one step, so it is written here.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def rectified_flow_coefficients(timestep: int, batch: int, dtype: torch.dtype,
                                device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise), each (B, 1, 1, 1, 1), computed in `dtype` as Fixer does.

    Args:
        timestep: 0..999 (Fixer: 250).
        batch: B.
        dtype: the latent's dtype (Fixer casts the integer timestep to it before dividing).
        device: where the latent is.
    """
    sigma = torch.full((batch,), timestep, dtype=dtype, device=device) / 1000
    sigma = sigma[:, None, None, None, None]  # "b t -> b 1 t 1 1" with one frame
    t = sigma / (sigma + 1)
    return 1.0 - t, -t, 1.0 - t, t


def denoise_once(velocity: Callable[[Tensor, Tensor], Tensor], latent: Tensor, timestep: int, net_dtype: torch.dtype) -> Tensor:
    """x0 from one call of the DiT, with the pipeline's dtype handling.

    Args:
        velocity: (scaled latent, c_noise (B,)) -> network output of the latent's shape.
        latent: (B, 16, T, h, w), the encoded render times sigma_data.
        timestep: 0..999.
        net_dtype: the DiT's dtype (the pipeline casts its inputs to its precision).

    Returns:
        (B, 16, T, h, w) float32: c_skip * latent (in the latent's dtype) + c_out * output (float32).
    """
    c_skip, c_out, c_in, c_noise = rectified_flow_coefficients(timestep, latent.shape[0], latent.dtype, latent.device)
    out = velocity((latent * c_in).to(net_dtype), c_noise.flatten().to(net_dtype)).float()
    return c_skip * latent + c_out * out

