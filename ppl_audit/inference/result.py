"""One result type for every backend: batched MH, HMC, tempered SMC, Pyro NUTS, SVI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch


@dataclass
class SamplingResult:
    """Draws and what the sampler reported.

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
        ``log_evidence``, ``importance_ess``, ...
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
