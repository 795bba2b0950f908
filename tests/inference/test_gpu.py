"""GPU paths: skipped without CUDA (CI has none); run them where a GPU is lent."""

import pytest
import torch

import ppl_audit as pa

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; this machine has no GPU"),
]


@pytest.mark.parametrize("method", ["mh", "smc", "hmc"])
def test_samplers_run_on_cuda(method, tiny_classifier):
    world = pa.HouseRocketWorld(device="cuda")
    res = pa.sample_level_set(world, tiny_classifier, [0.5, 0.5], method=method, num_particles=256,
                              num_steps=20, seed=0, device="cuda")
    assert res.latents.shape == (256, 3)
    assert torch.isfinite(res.probs).all()


def test_render_stays_on_the_device():
    world = pa.HouseRocketWorld(device="cuda")
    z = world.sample(8)
    assert z.device.type == "cuda" and world.decode(z).device.type == "cuda"
