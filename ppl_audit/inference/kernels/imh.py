"""Independent Metropolis-Hastings with a fitted Gaussian-mixture proposal, batched over groups of chains.

Every chain proposes a fresh draw ``z' ~ q`` from its group's mixture, ignoring
where it stands, and accepts with probability
``min(1, p(z') q(z) / (p(z) q(z')))`` (Tierney 1994). With ``q`` close to ``p``
the chain jumps anywhere in one step, modes included; with ``q`` poor it
rejects and stays put, never biased. The chains come in groups, each proposing from its own
:class:`~ppl_audit.inference.kernels.mixture.GaussianMixture`.

The state is :class:`~ppl_audit.inference.kernels.mh.MHState`, so the SMC
driver can interleave these moves with random-walk ones.
"""

from __future__ import annotations

import torch

from ppl_audit.errors import InvalidInputError
from ppl_audit.inference.kernels.mh import LogDensityFn, MHInfo, MHState, evaluate
from ppl_audit.inference.kernels.mixture import GaussianMixture


def step(
    generator: torch.Generator | None,
    state: MHState,
    log_density_fn: LogDensityFn,
    *,
    proposal: GaussianMixture,
    group: torch.Tensor,
) -> tuple[MHState, MHInfo]:
    """One independent proposal per chain from the mixture its ``group`` entry names.

    Parameters
    ----------
    generator : torch.Generator or None
        Source of randomness (on the position's device).
    state : MHState
        ``N`` chains.
    log_density_fn : callable
    proposal : GaussianMixture
        ``G`` mixtures. For the chain to leave its target invariant, chain
        ``i``'s mixture must not depend on chain ``i``'s own position (the
        SMC driver fits it on other particles).
    group : torch.Tensor, (N,), int64
        The mixture (``0 <= group < G``) each chain proposes from.

    Returns
    -------
    (MHState, MHInfo)

    Examples
    --------
    A proposal equal to the target accepts everything:

    >>> from ppl_audit.inference.kernels import mh, mixture
    >>> logp = lambda z: torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    >>> q = mixture.GaussianMixture(torch.zeros(1, 1), torch.zeros(1, 1, 2), torch.eye(2).expand(1, 1, 2, 2))
    >>> s = mh.init(torch.zeros(5, 2), logp)
    >>> s, info = step(torch.Generator().manual_seed(0), s, logp, proposal=q, group=torch.zeros(5, dtype=torch.long))
    >>> bool(info.accepted.all())
    True
    """
    position = state.position
    n = position.shape[0]
    if group.shape != (n,):
        raise InvalidInputError(f"group must have shape ({n},), got {tuple(group.shape)}")
    candidate = proposal.sample(generator, group).to(position.dtype)
    log_q_current = proposal.log_prob(position, group)
    log_q_candidate = proposal.log_prob(candidate, group)
    logp_new, extras_new = evaluate(log_density_fn, candidate)
    log_u = torch.rand(n, generator=generator, device=position.device, dtype=position.dtype).log()
    accept = log_u < (logp_new - state.log_density) + (log_q_current - log_q_candidate).to(position.dtype)
    new_position = torch.where(accept.unsqueeze(-1), candidate, position)
    new_logp = torch.where(accept, logp_new, state.log_density)
    new_extras = None
    if state.extras is not None and extras_new is not None:
        new_extras = torch.where(accept.unsqueeze(-1), extras_new, state.extras)
    return MHState(new_position, new_logp, new_extras), MHInfo(accept, logp_new)


__all__ = [
    "step",
]
