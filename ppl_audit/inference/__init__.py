"""Inference: kernels over batches of chains and the driver that runs them."""

from ppl_audit.inference.mcmc import MCMCConfig, SamplingResult, run_mh

__all__ = ["MCMCConfig", "SamplingResult", "run_mh"]
