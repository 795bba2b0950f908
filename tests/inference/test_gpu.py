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


def test_smc_with_independent_moves_runs_on_cuda(tiny_classifier):
    # 2,000 particles make 8 runs of 250: fitted mixtures and independent moves, all on the device.
    world = pa.HouseRocketWorld(device="cuda")
    res = pa.sample_level_set(world, tiny_classifier, [0.5, 0.5], method="smc", num_particles=2000, seed=0,
                              device="cuda")
    assert res.chain.superchains == 8
    assert torch.isfinite(res.probs).all()


def test_mixture_fit_and_imh_step_stay_on_the_device():
    from ppl_audit.inference.kernels import imh, mh, mixture

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4, 256, 3, generator=g, device="cuda")
    mix = mixture.fit(x, num_components=2, defensive_weight=0.1, generator=g)
    logp = lambda z: -0.5 * (z**2).sum(-1)
    state = mh.init(x.reshape(-1, 3), logp)
    state, info = imh.step(g, state, logp, proposal=mix, group=torch.arange(4, device="cuda").repeat_interleave(256))
    assert state.position.device.type == "cuda" and info.accepted.device.type == "cuda"


def test_render_stays_on_the_device():
    world = pa.HouseRocketWorld(device="cuda")
    z = world.sample(8)
    assert z.device.type == "cuda" and world.decode(z).device.type == "cuda"
