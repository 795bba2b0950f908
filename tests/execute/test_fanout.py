"""Shards and level sets as units: a sharded latent search equals one search, and SMC run groups sent out
as units give the local samples, in process."""

from __future__ import annotations

import torch

from ppl_audit.audits import levelset
from ppl_audit.audits.fanout import sharded_search
from ppl_audit.audits.levelset import LevelSetAuditSpec
from ppl_audit.classifiers.synthesis import SearchConfig, latent_search
from ppl_audit.execute import LocalExecutor, use_executor
from ppl_audit.generative.vae_ensemble import VAEEnsemble
from tests.execute.kwargs_only import KwargsOnlyExecutor

IMAGES = torch.rand(25, 1, 28, 28, generator=torch.Generator().manual_seed(5))


def test_a_sharded_latent_search_equals_one_search_byte_for_byte(cache_root):
    generators = VAEEnsemble(10, 2, (16,), seed=0).eval()
    config = SearchConfig(draws=32, steps=4, chunk=10, refine_restarts=1, refine_ratio=1.5, seed=3)
    whole = latent_search(generators, IMAGES, config)
    shards = sharded_search(LocalExecutor(), generators, "unused-in-process", IMAGES, config, cache=cache_root,
                            data_dir=None, device="cpu")
    assert whole.timings["refined_images"] > 0  # the refinement ran, over images of several shards
    for field in ("distances", "latents", "start_distances"):
        assert torch.equal(getattr(whole, field), getattr(shards, field)), field
    assert shards.timings["refined_images"] == whole.timings["refined_images"]


def test_smc_run_groups_fan_out_on_a_remote_executor_with_the_local_samples(one_thread, tiny_card_file):
    spec = LevelSetAuditSpec(classifier=str(tiny_card_file), worlds=("house-rocket",), num_particles=64, num_steps=8,
                             num_samples=32, num_prior_samples=50, device="cpu",
                             sampler_options={"run_groups": 2, "max_rounds": 1})
    local = levelset.evaluate(spec, seed=0)
    executor = KwargsOnlyExecutor()
    with use_executor(executor):
        remote = levelset.evaluate(spec, seed=0)
    # each target's groups went out as units of their own, the targets one after another
    assert executor.tasks[0] == ("house-rocket/house: SMC run groups",
                                 ["house-rocket/house round 1 group 1", "house-rocket/house round 1 group 2"])
    assert len(executor.tasks) == len(spec.targets)
    for here, there in zip(local.worlds[0].targets, remote.worlds[0].targets, strict=True):
        assert torch.equal(here.samples.latents, there.samples.latents)
        assert torch.equal(here.samples.probs, there.samples.probs)
        assert here.samples.chain.superchains == 4  # 64 particles: 4 runs of 16, in 2 groups
        assert {k: v for k, v in here.metrics.items() if "second" not in k} == \
               {k: v for k, v in there.metrics.items() if "second" not in k}
