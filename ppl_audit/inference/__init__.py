"""Inference: kernels over batches of chains and the driver that runs them."""

from ppl_audit.inference.mcmc import MCMCConfig, run_hmc, run_mh
from ppl_audit.inference.result import SamplingResult

__all__ = ["MCMCConfig", "SamplingResult", "run_hmc", "run_mh"]
