"""One result type for every backend: batched MH, HMC, tempered SMC, Pyro NUTS, SVI.

A result is frozen: code that adds to one (a superchain count, an evaluation
count) builds a new one with :func:`dataclasses.replace`. Its ``info`` is a
JSON-safe dict that reports write out as is; the ``*RunInfo`` types below name
the keys the batched backends fill in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NotRequired, Optional, TypedDict

import torch


class MHRunInfo(TypedDict):
    """``info`` of :func:`~ppl_audit.inference.mcmc.run_mh`."""

    acceptance_per_step: list[float]  # mean acceptance over chains at every step, warm-up included
    proposal_scale: list[float]  # per-latent random-walk scale after warm-up


class HMCRunInfo(TypedDict):
    """``info`` of :func:`~ppl_audit.inference.mcmc.run_hmc`."""

    acceptance_per_step: list[float]  # mean acceptance probability over chains, warm-up included
    step_size: list[float]  # per chain, after warm-up
    inverse_mass: list[float]  # diagonal, shared by all chains
    num_leapfrog: int
    num_divergences: int  # post-warm-up
    num_warmup_divergences: int
    target_acceptance: float
    step_size_jitter: float
    step_size_adaptation: str  # "pooled" or "per_chain"
    mass_matrix_windows: list[list[int]]  # [start, end) warm-up steps of each window


class SMCRunInfo(TypedDict):
    """``info`` of :func:`~ppl_audit.inference.smc.run_smc` (R runs)."""

    log_evidence: list[float]  # R estimates of log Z
    log_evidence_mean: float
    log_evidence_pooled: float  # log of the mean of the R evidence estimates
    tempering_schedule: list[list[float]]  # R lists of betas from 0 to 1
    ess_per_stage: list[float]  # mean ESS / M before resampling, over the runs still tempering
    num_stages: int
    acceptance_per_stage: list[float]
    moves_per_stage: list[int]
    acceptance_per_step: list[float]  # every MH move, final draws included
    proposal_scale_factor: list[float]  # R factors c_r
    proposal_scale: list[list[float]]  # R lists of D per-latent scales of the final draws
    guarded_stages: list[int]  # R counts of stages whose step the likelihood's bound held back
    # Set when several results' runs are pooled into superchains (ppl_audit.inference.smc.pool_runs):
    rounds: NotRequired[int]  # results pooled: the runs in each superchain
    log_evidence_superchains: NotRequired[list[float]]  # log of each superchain's mean evidence
    # Set by the level-set sampler when it discarded a first round whose runs disagreed (ppl_audit.sampling):
    discarded_rounds: NotRequired[list[dict]]  # each one's ESS fraction, checks and cost


@dataclass(frozen=True)
class SamplingResult:
    """Draws and what the sampler reported (frozen: use :func:`dataclasses.replace` to change one).

    Attributes
    ----------
    method : str
        ``"mh"``, ``"hmc"``, ``"smc"``, ``"nuts"`` or ``"svi"``.
    latent_names : tuple of str
    trace : torch.Tensor, (chains, draws, D)
        Post-warm-up positions, on the CPU.
    sample_stats : dict of str to torch.Tensor
        Per-draw statistics shaped ``(chains, draws)``: ``accepted`` (bool),
        ``diverging`` (bool), ``acceptance_prob``, ... as the backend has them.
    extras_trace : torch.Tensor or None, (chains, draws, E)
        Extras of every kept state (for level sets, the classifier's predictions).
    extras_names : tuple of str
    num_warmup : int
        Warm-up steps per chain that were dropped.
    num_evaluations : int
        Model evaluations (log density, or log density + gradient), all chains.
    seconds : float
        Wall-clock time of the run.
    superchains : int or None
        When set, chains form this many equal, contiguous groups that share
        their start (or are independent SMC runs): nested R-hat compares them.
    info : dict
        JSON-safe, method-specific facts: ``acceptance_per_step``,
        ``step_size``, ``tempering_schedule``, ``ess_per_stage``,
        ``log_evidence``, ``importance_ess``, ... (:class:`MHRunInfo`,
        :class:`HMCRunInfo`, :class:`SMCRunInfo` list the batched backends' keys).

    Examples
    --------
    >>> import dataclasses
    >>> res = SamplingResult(method="mh", latent_names=("z0",), trace=torch.zeros(4, 3, 1))
    >>> res.num_chains, res.num_draws
    (4, 3)
    >>> dataclasses.replace(res, superchains=2).superchains
    2
    """

    method: str
    latent_names: tuple[str, ...]
    trace: torch.Tensor
    sample_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    extras_trace: Optional[torch.Tensor] = None
    extras_names: tuple[str, ...] = ()
    num_warmup: int = 0
    num_evaluations: int = 0
    seconds: float = 0.0
    superchains: Optional[int] = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        """Number of chains (particles)."""
        return int(self.trace.shape[0])

    @property
    def num_draws(self) -> int:
        """Kept draws per chain."""
        return int(self.trace.shape[1])

    @property
    def final_position(self) -> torch.Tensor:
        """Last state of every chain, ``(chains, D)``."""
        return self.trace[:, -1]

    @property
    def final_extras(self) -> Optional[torch.Tensor]:
        """Extras of the last state of every chain, ``(chains, E)``."""
        return None if self.extras_trace is None else self.extras_trace[:, -1]

    @property
    def accepted(self) -> Optional[torch.Tensor]:
        """``(chains, draws)`` bool: whether each kept step moved (MH-type samplers)."""
        return self.sample_stats.get("accepted")

    @property
    def acceptance_rate(self) -> float:
        """Mean post-warm-up acceptance (``nan`` when the backend has none)."""
        if "acceptance_prob" in self.sample_stats:
            return float(self.sample_stats["acceptance_prob"].float().mean())
        if self.accepted is not None:
            return float(self.accepted.float().mean())
        return float("nan")

    @property
    def acceptance_per_step(self) -> list[float]:
        """Mean acceptance over chains at every step, warm-up included (when recorded)."""
        return list(self.info.get("acceptance_per_step", []))

    def to_arviz(self):
        """The draws as ``arviz.InferenceData`` (see :mod:`ppl_audit.diagnostics`)."""
        from ppl_audit import diagnostics

        return diagnostics.to_inference_data(self)


__all__ = [
    "HMCRunInfo",
    "MHRunInfo",
    "SMCRunInfo",
    "SamplingResult",
]
