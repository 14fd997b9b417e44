"""The NeRF's optional CUDA path (``[cuda]`` extra: nerfacc) against the pure-torch path."""
from __future__ import annotations

import pytest
import torch

from lightning_modules.scene.nerf.rendering import render_weights

pytestmark = pytest.mark.gpu


def test_nerfacc_weights_match_torch_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("nerfacc")
    g = torch.Generator().manual_seed(0)
    t = torch.sort(torch.rand(64, 33, generator=g) * 4, dim=1).values.cuda()
    sigma = (torch.rand(64, 32, generator=g) * 3).cuda()
    w_torch, tr_torch = render_weights(sigma, t, backend="torch")
    w_acc, tr_acc = render_weights(sigma, t, backend="nerfacc")
    torch.testing.assert_close(w_acc, w_torch, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tr_acc, tr_torch, atol=1e-5, rtol=1e-4)


def test_nerf_module_renders_the_same_on_cuda_as_on_cpu(tmp_path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from datamodules.cameras.cameras import Cameras
    from datamodules.cameras.poses import look_at
    from datamodules.scene.scene_setup import SceneSetup
    from lightning_modules.scene.nerf.field import FieldSettings
    from lightning_modules.scene.nerf.model import SamplingSettings
    from lightning_modules.scene.nerf.module import NerfSceneModule

    torch.manual_seed(0)
    module = NerfSceneModule(field=FieldSettings(num_levels=4, max_res=32, log2_hashmap_size=10,
                                                 proposal_max_res=(16, 32), proposal_num_levels=2,
                                                 proposal_log2_hashmap_size=8, appearance_embed_dim=0),
                             sampling=SamplingSettings((16, 8), 8))
    eye = torch.tensor([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5]])
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    cams = Cameras.from_c2w(look_at(eye, torch.zeros(3)), K, 16, 16, ["a", "b"])
    module.setup_scene(SceneSetup(cams, 2.2))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    cpu_rgb, cpu_alpha = module.render_views(cams)
    gpu_rgb, gpu_alpha = module.cuda().render_views(cams)
    torch.testing.assert_close(gpu_rgb.cpu(), cpu_rgb, atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu_alpha.cpu(), cpu_alpha, atol=1e-4, rtol=0)
