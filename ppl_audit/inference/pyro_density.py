"""A Pyro model's joint log density for many values of its latent at once.

:func:`batched_log_density` turns a Pyro model with one latent site (``"z"``
for every prior here) into ``fn(z (N, D)) -> (N,)``: the log density of all
sample sites, observed ones included, with the latent set to each of the
``N`` rows. All ``N`` rows go through ONE vectorised trace, the way Pyro's
vectorised ELBO particles do: the model runs inside an extra outer
``pyro.plate`` (left of every plate the model declares), the latent is
conditioned on a value shaped to broadcast against it, and each site's
log-probability is summed over every dimension except that plate's.

Nothing here touches the caller's Pyro state: the global param store is
swapped for a scope that holds the same parameter objects (models that read
trained parameters see them; whatever the model creates is dropped), the
global random state is restored after the one prototype trace, and internal
sites are hidden from any handler the caller has installed. (The scope
swaps the process-wide store for the duration of a call: do not run these
functions in one thread while another trains with the global store.)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites
from pyro.util import get_rng_state, set_rng_state
from torch.distributions import biject_to
from torch.distributions.transforms import Transform

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.validators import LATENT_SITE

BATCH_PLATE = "_ppl_audit_batch"  # the outer plate over latent values; the prefix keeps it off user names


@dataclass(frozen=True)
class SiteInfo:
    """What one prototype trace tells about a model's latent site.

    Attributes
    ----------
    name : str
    batch_shape, event_shape : torch.Size
        Of the site's distribution in an unbatched run of the model.
    support : torch.distributions.constraints.Constraint
    max_plate_nesting : int
        Dimensions left of the event that the model may use (its plates, or
        undeclared batch dimensions of any site); the outer batch plate goes
        at ``dim = -(max_plate_nesting + 1)``.
    """

    name: str
    batch_shape: torch.Size
    event_shape: torch.Size
    support: object
    max_plate_nesting: int

    @property
    def dim(self) -> int:
        """``D``: the number of scalars in one value of the site."""
        return math.prod(self.batch_shape) * math.prod(self.event_shape)

    def shaped(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` rows as site values ``(N, *batch_shape, *event_shape)``."""
        return z.reshape(z.shape[0], *self.batch_shape, *self.event_shape)

    def broadcastable(self, value: torch.Tensor) -> torch.Tensor:
        """Site values ``(N, *batch, *event)`` padded with 1s so that ``N`` sits at the batch plate's dim."""
        pad = self.max_plate_nesting - len(self.batch_shape)
        return value.reshape(value.shape[0], *([1] * pad), *self.batch_shape, *self.event_shape)


@contextmanager
def isolated_param_store(exclude_prefixes: Sequence[str] = ()) -> Iterator[None]:
    """Run the body against a scope of Pyro's global param store, then put the caller's store back.

    The scope starts with the caller's parameters, as the very same tensor
    objects (so a model that reads trained parameters, or a ``PyroModule``
    synced with the store, sees exactly them and is not re-synced to copies),
    minus names that start with one of ``exclude_prefixes`` (for example a
    guide's name, so a stale guide of the caller's cannot seed ours). On exit
    the store holds the caller's names, constraints and objects again, and
    nothing created inside remains.

    Examples
    --------
    >>> store = pyro.get_param_store()
    >>> with isolated_param_store():
    ...     _ = pyro.param("_doctest_only", torch.zeros(1))
    >>> "_doctest_only" in store
    False
    """
    store = pyro.get_param_store()
    current = store.get_state()
    keep = {
        "params": {k: v for k, v in current["params"].items() if not k.startswith(tuple(exclude_prefixes))},
        "constraints": {k: v for k, v in current["constraints"].items() if not k.startswith(tuple(exclude_prefixes))},
    }
    with store.scope(keep):
        yield


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore torch's, Python's and NumPy's global random state on exit.

    Pyro samples from the global generators; code that seeds them
    (``pyro.set_rng_seed``) for reproducibility runs inside this so that the
    caller's random stream is left where it was.

    Examples
    --------
    >>> a = torch.get_rng_state()
    >>> with preserved_rng():
    ...     pyro.set_rng_seed(1); _ = torch.rand(3)
    >>> torch.equal(a, torch.get_rng_state())
    True
    """
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def _batch_shape(node) -> torch.Size:
    return torch.Size(getattr(node["fn"], "batch_shape", ()))


def inspect_site(model: Callable, site: str = LATENT_SITE, model_args: tuple = (), model_kwargs: dict | None = None,
                 *, single_latent: bool = True) -> SiteInfo:
    """Trace ``model`` once (prior draw, random state restored) and describe ``site``.

    Parameters
    ----------
    model : callable
        A Pyro model.
    site : str
        Its latent sample site.
    model_args, model_kwargs
        What the model is called with.
    single_latent : bool
        Raise when the model has other latent sample sites (a joint density
        over ``site`` alone is then not defined).

    Returns
    -------
    SiteInfo

    Raises
    ------
    InvalidInputError
        If ``site`` is missing or observed, or (with ``single_latent``) other
        latent sites exist.
    ModelOutputError
        If the prior draw's log density is NaN.

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> def toy():
    ...     pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    >>> inspect_site(toy).dim
    2
    """
    kwargs = dict(model_kwargs or {})
    # Validation off: a NaN parameter should surface as ModelOutputError below, naming the site.
    with isolated_param_store(), preserved_rng(), poutine.block(), torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(model).get_trace(*model_args, **kwargs)
        trace = prune_subsample_sites(trace)
        sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample"}
        if site not in sites:
            raise InvalidInputError(f"the model has no sample site {site!r}; its sample sites: {sorted(sites)}")
        node = sites[site]
        if node["is_observed"]:
            raise InvalidInputError(f"site {site!r} is observed in the model; pass the name of a latent site")
        others = sorted(n for n, s in sites.items() if n != site and not s["is_observed"]
                        and not s["infer"].get("is_auxiliary"))
        if single_latent and others:
            raise InvalidInputError(
                f"the model has latent sites besides {site!r} ({', '.join(others)}); this needs a model whose "
                f"only latent is {site!r} (condition or marginalise the others)"
            )
        trace.compute_log_prob()
        bad = [n for n, s in sites.items() if torch.isnan(torch.as_tensor(s["log_prob"])).any()]
        if bad:
            raise ModelOutputError(
                f"the model's log density is NaN at a draw from its prior (at site(s) {', '.join(bad)})"
            )
        plate_dims = [f.dim for s in sites.values() for f in s["cond_indep_stack"] if f.vectorized and f.dim is not None]
        batch_dims = [len(_batch_shape(s)) for s in sites.values()]
        nesting = max([-d for d in plate_dims] + batch_dims + [0])
        fn = node["fn"]
        return SiteInfo(site, _batch_shape(node), torch.Size(fn.event_shape), fn.support, nesting)


def per_particle(log_prob, n: int, max_plate_nesting: int) -> torch.Tensor:
    """Sum a site's log-probability over every dim but the batch plate's: ``(N,)``.

    The batch plate sits at ``dim = -(max_plate_nesting + 1)``; a term that
    does not extend that far (or has size 1 there) is shared by every particle.

    Examples
    --------
    >>> per_particle(torch.ones(3, 2), 3, 1).tolist()  # batch plate at dim -2, one inner plate of 2
    [2.0, 2.0, 2.0]
    """
    lp = torch.as_tensor(log_prob)
    dim = max_plate_nesting + 1
    if lp.dim() < dim:
        return lp.sum().expand(n)
    lp = lp.movedim(-dim, 0)
    return lp.reshape(lp.shape[0], -1).sum(-1).expand(n)


def vectorized_trace(fn: Callable, n: int, max_plate_nesting: int, model_args: tuple = (),
                     model_kwargs: dict | None = None):
    """Trace ``fn`` inside the outer batch plate of size ``n``; log-probabilities computed.

    Returns the pruned trace (no subsample sites); its sites' ``log_prob``
    entries are scaled and masked as Pyro's inference would see them.
    """
    def batched(*args, **kwargs):
        with pyro.plate(BATCH_PLATE, n, dim=-(max_plate_nesting + 1)):
            return fn(*args, **kwargs)

    with poutine.block(), pyro.validation_enabled(False):
        trace = poutine.trace(batched).get_trace(*model_args, **dict(model_kwargs or {}))
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
    return trace


def trace_log_density(trace, n: int, max_plate_nesting: int) -> torch.Tensor:
    """Per-particle sum of every sample site's log-probability in a vectorised trace, ``(N,)``."""
    total = None
    for node in trace.nodes.values():
        if node["type"] != "sample":
            continue
        lp = per_particle(node["log_prob"], n, max_plate_nesting)
        total = lp if total is None else total + lp
    if total is None:
        raise InvalidInputError("the model has no sample sites")
    return total


def constraint_transform(model: Callable, site: str = LATENT_SITE, model_args: tuple = (),
                         model_kwargs: dict | None = None) -> Transform:
    """The bijection from unconstrained ``R^D`` onto ``site``'s support (``biject_to(support)``).

    It acts on site-shaped values; for the event-shaped ``(N, D)`` latents of
    the priors here that is the rows themselves.

    Examples
    --------
    >>> from ppl_audit.priors import HouseRocketWorld
    >>> t = constraint_transform(HouseRocketWorld().model)
    >>> bool((t(torch.zeros(1, 3)) == 1).all())
    True
    """
    return biject_to(inspect_site(model, site, model_args, model_kwargs, single_latent=False).support)


def batched_log_density(
    model: Callable,
    *,
    site: str = LATENT_SITE,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    unconstrained: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's joint log density as a batched function of its latent.

    Parameters
    ----------
    model : callable
        A Pyro model whose only latent sample site is ``site`` (other sites
        observed). It is traced once here (a prior draw, with the global
        random state restored) to find the site's shape and support and the
        model's plate nesting; it is never modified.
    site : str
        The latent site.
    model_args, model_kwargs
        What the model is called with (``LevelSet.model`` takes none: the
        unplated model).
    unconstrained : bool
        Take ``z`` in unconstrained space: ``z = T(u)`` with
        ``T = biject_to(support)``, and add ``log|det dT/du|`` so the result
        is the density of ``u`` (what gradient samplers on ``R^D`` need).

    Returns
    -------
    callable
        ``fn(z (N, D)) -> (N,)``: ``sum over sites of log p(site | parents)``
        for each row, from ONE vectorised trace. Differentiable in ``z``.
        Rows outside the latent's support give ``-inf`` (constrained mode);
        NaN from the model is returned as is (samplers decide: the MH
        kernel and these backends raise ``ModelOutputError``).

    Raises
    ------
    InvalidInputError
        For a missing, observed or non-unique latent site, or ``z`` of the
        wrong shape.

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> def toy():
    ...     z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    ...     pyro.sample("obs", dist.Normal(z.sum(-1), 1.0), obs=torch.tensor(0.5))
    >>> fn = batched_log_density(toy)
    >>> fn(torch.zeros(4, 2)).shape
    torch.Size([4])
    """
    kwargs = dict(model_kwargs or {})
    info = inspect_site(model, site, model_args, kwargs)
    transform = biject_to(info.support) if unconstrained else None

    def log_density(z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[-1] != info.dim:
            raise InvalidInputError(
                f"latents must have shape (N, {info.dim}) for site {site!r}, got {tuple(z.shape)}"
            )
        n = z.shape[0]
        value = info.shaped(z)
        log_jacobian = None
        if transform is not None:
            u = value
            value = transform(u)
            log_jacobian = transform.log_abs_det_jacobian(u, value).reshape(n, -1).sum(-1)
        inside = info.support.check(value).reshape(n, -1).all(-1)
        with isolated_param_store():
            trace = vectorized_trace(poutine.condition(model, data={site: info.broadcastable(value)}), n,
                                     info.max_plate_nesting, model_args, kwargs)
        total = trace_log_density(trace, n, info.max_plate_nesting)
        total = torch.where(inside, total, torch.full_like(total, -math.inf))
        if log_jacobian is not None:
            total = total + log_jacobian
        return total

    return log_density


__all__ = [
    "BATCH_PLATE",
    "SiteInfo",
    "batched_log_density",
    "constraint_transform",
    "inspect_site",
    "isolated_param_store",
    "per_particle",
    "preserved_rng",
    "trace_log_density",
    "vectorized_trace",
]
