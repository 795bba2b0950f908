"""Shards and level sets as units: a sharded latent search equals one search, in process."""

from __future__ import annotations

import torch

from ppl_audit.audits.fanout import sharded_search
from ppl_audit.classifiers.synthesis import SearchConfig, latent_search
from ppl_audit.execute import LocalExecutor
from ppl_audit.generative.vae_ensemble import VAEEnsemble

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
