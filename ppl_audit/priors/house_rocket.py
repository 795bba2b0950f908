"""The house/rocket world of Booth et al. (2020), Section 4.1, as a Pyro prior.

Generative process (all lengths in pixels, ``N+`` the normal truncated to
positive values)::

    c ~ Bernoulli(0.5)                     1 = house, 0 = rocket
    rocket: w ~ N+(10, 5^2), h ~ N+(30, 10^2), t ~ N+(8, 2^2)
    house:  w ~ N+(30, 10^2), h ~ N+(10, 2^2), t ~ N+(12, 4^2)  (HOUSE_ROOF: our choice)
    x = blur(render(w, h, t))

The circle variant (the paper's out-of-distribution world) overlays a disk
with radius ``r ~ N+(20, 10^2)`` and centre ``cx, cy ~ U(20, 40)``.

The latent ``z = (w, h, t[, r, cx, cy])`` keeps the class ``c`` out: it is
summed out of :meth:`HouseRocketWorld.log_prob` exactly, so gradient-based
samplers see a smooth density.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

from ppl_audit._device import resolve_device
from ppl_audit.errors import InvalidInputError
from ppl_audit.priors.base import Prior, check_unit_cube
from ppl_audit.priors.render import CANVAS_SIZE, render_shapes
from ppl_audit.priors.truncated_normal import LowerTruncatedNormal

CLASS_NAMES = ("rocket", "house")  # class index c: 0 = rocket, 1 = house
HOUSE_PROBABILITY = 0.5  # P(c = 1), the paper's Bernoulli(0.5)
ROCKET_SHAPE = {"w": (10.0, 5.0), "h": (30.0, 10.0), "t": (8.0, 2.0)}  # (mean, sd), paper
HOUSE_SHAPE = {"w": (30.0, 10.0), "h": (10.0, 2.0)}  # (mean, sd), paper
# (mean, sd) of the house roof t ~ N+: the paper gives none; a pitch of 0.8 at the mean width keeps the
# ambiguous level set balanced (README, "The house/rocket world").
HOUSE_ROOF = (12.0, 4.0)
CIRCLE_RADIUS = (20.0, 10.0)  # (mean, sd) of r ~ N+, paper
CIRCLE_CENTRE_RANGE = (20.0, 40.0)  # cx, cy ~ U(20, 40), paper

WORLDS = ("house-rocket", "house-rocket-circle")


class _ClassMixture(TorchDistribution):
    """Mixture over the class ``c`` of products of positive truncated normals,
    times shared uniforms; event shape ``(D,)``.

    ``loc``/``scale`` are ``(2, Dn)`` (one row per class); ``low``/``high``
    are ``(Du,)`` bounds of the uniform coordinates that follow.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, class_probs, loc, scale, low, high, validate_args=None):
        self.class_probs, self.loc, self.scale = class_probs, loc, scale
        self.low, self.high = low, high
        self._num_tn = loc.shape[-1]
        event = torch.Size([self._num_tn + low.numel()])
        super().__init__(torch.Size(), event, validate_args=False)

    @constraints.dependent_property
    def support(self):
        if self.low.numel() == 0:
            return constraints.independent(constraints.positive, 1)
        low, high = self.low.min().item(), self.high.max().item()
        return constraints.independent(
            constraints.cat(
                [constraints.positive, constraints.interval(low, high)],
                dim=-1,
                lengths=[self._num_tn, self.low.numel()],
            ),
            1,
        )

    def _components(self):
        return LowerTruncatedNormal(self.loc, self.scale)  # batch (2, Dn)

    def sample_with_class(self, sample_shape=torch.Size(), generator=None):
        """Draw ``(z, c)``: latents ``(*S, D)`` and the class labels ``(*S,)``."""
        shape = torch.Size(sample_shape)
        dev, dt = self.loc.device, self.loc.dtype
        c = (torch.rand(shape, device=dev, dtype=dt, generator=generator) < self.class_probs[1]).long()
        comp = LowerTruncatedNormal(self.loc[c], self.scale[c])
        z = comp.sample(generator=generator)
        if self.low.numel():
            u = torch.rand(shape + self.low.shape, device=dev, dtype=dt, generator=generator)
            z = torch.cat([z, self.low + (self.high - self.low) * u], dim=-1)
        return z, c

    def sample(self, sample_shape=torch.Size(), generator=None):
        return self.sample_with_class(sample_shape, generator=generator)[0]

    def from_normal(self, u):
        """``u (..., 1 + D) -> z (..., D)``: ``u[..., 0]`` picks the class, the rest are quantiles."""
        house = (torch.special.ndtr(u[..., 0]) < self.class_probs[1]).long()
        z = LowerTruncatedNormal(self.loc[house], self.scale[house]).from_normal(u[..., 1 : 1 + self._num_tn])
        if self.low.numel():
            z = torch.cat([z, self.low + (self.high - self.low) * torch.special.ndtr(u[..., 1 + self._num_tn :])], -1)
        return z

    def from_unit_cube(self, u):
        """``u (..., 1 + D)`` in ``[0, 1]`` ``-> z (..., D)``: ``u[..., 0] < P(house)`` is a house, the rest
        are the truncated normals' and the uniforms' quantiles (the same orientation as :meth:`from_normal`)."""
        house = (u[..., 0] < self.class_probs[1]).long()
        z = LowerTruncatedNormal(self.loc[house], self.scale[house]).from_uniform(u[..., 1 : 1 + self._num_tn])
        if self.low.numel():
            z = torch.cat([z, self.low + (self.high - self.low) * u[..., 1 + self._num_tn :].to(z.dtype)], -1)
        return z

    def _joint_log_prob(self, value):
        """``log p(c, z_tn)`` per class ``(..., 2)``; the uniform coordinates do not depend on the class."""
        z_tn = value[..., : self._num_tn].unsqueeze(-2)  # (..., 1, Dn)
        return self._components().log_prob(z_tn).sum(-1) + self.class_probs.log()

    def class_posterior(self, value):
        """``P(c | z)`` ``(..., 2)`` (rocket, house): Bayes' rule on the mixture's own densities."""
        return torch.softmax(self._joint_log_prob(value), dim=-1)

    def log_prob(self, value):
        per_class = self._joint_log_prob(value)
        logp = torch.logsumexp(per_class, dim=-1)
        if self.low.numel():
            z_u = value[..., self._num_tn :]
            inside = ((z_u >= self.low) & (z_u <= self.high)).all(-1)
            log_u = -(self.high - self.low).log().sum()
            logp = torch.where(inside, logp + log_u, torch.full_like(logp, -math.inf))
        return logp


class HouseRocketWorld(Prior):
    """The procedural house/rocket prior, optionally with the OoD circle.

    Parameters
    ----------
    circle : bool, default False
        Overlay the paper's out-of-distribution circle (latent grows to 6-D).
    device : str or torch.device, default "cpu"
        Where the distribution's parameters live; ``decode`` follows ``z``.

    Examples
    --------
    >>> world = HouseRocketWorld()
    >>> z = world.sample(4, generator=torch.Generator().manual_seed(0))
    >>> world.decode(z).shape
    torch.Size([4, 1, 64, 64])
    >>> world.log_prob(z).shape
    torch.Size([4])
    """

    class_names = CLASS_NAMES

    def __init__(self, *, circle: bool = False, device="cpu"):
        self.circle = bool(circle)
        self.device = resolve_device(device)
        self.latent_names = ("w", "h", "t", "r", "cx", "cy") if self.circle else ("w", "h", "t")
        self.image_shape = (1, CANVAS_SIZE, CANVAS_SIZE)
        rocket = [ROCKET_SHAPE["w"], ROCKET_SHAPE["h"], ROCKET_SHAPE["t"]]
        house = [HOUSE_SHAPE["w"], HOUSE_SHAPE["h"], HOUSE_ROOF]
        if self.circle:
            rocket, house = rocket + [CIRCLE_RADIUS], house + [CIRCLE_RADIUS]
        params = torch.tensor([rocket, house], dtype=torch.float32, device=self.device)
        self._loc, self._scale = params[..., 0], params[..., 1]
        n_u = 2 if self.circle else 0
        self._low = torch.full((n_u,), CIRCLE_CENTRE_RANGE[0], device=self.device)
        self._high = torch.full((n_u,), CIRCLE_CENTRE_RANGE[1], device=self.device)
        self._class_probs = torch.tensor(
            [1 - HOUSE_PROBABILITY, HOUSE_PROBABILITY], dtype=torch.float32, device=self.device
        )

    @property
    def name(self) -> str:
        """The world's registry name."""
        return WORLDS[1] if self.circle else WORLDS[0]

    def distribution(self) -> _ClassMixture:
        return _ClassMixture(self._class_probs, self._loc, self._scale, self._low, self._high)

    @property
    def normal_dim(self) -> int:
        """``1 + D``: the class coordinate, then one per latent (:meth:`from_normal`)."""
        return 1 + self.latent_dim

    def from_normal(self, u: torch.Tensor) -> torch.Tensor:
        """``z ~ p(z)`` from ``u ~ N(0, I_{1+D})``: the class (``u_0 < ndtri(P(house))`` is a house),
        then the truncated normals' and the uniforms' quantiles at ``Phi(u_i)``.

        Examples
        --------
        >>> world = HouseRocketWorld(circle=True)
        >>> z = world.from_normal(torch.randn(8, world.normal_dim))
        >>> z.shape, bool(torch.isfinite(world.log_prob(z)).all())
        (torch.Size([8, 6]), True)
        """
        if u.ndim != 2 or u.shape[-1] != self.normal_dim:
            raise InvalidInputError(f"u must have shape (N, {self.normal_dim}) for world {self.name!r}, "
                                    f"got {tuple(u.shape)}")
        return self.distribution().from_normal(u.to(self._loc.device)).to(u.device)

    def from_unit_cube(self, u: torch.Tensor) -> torch.Tensor:
        """``z ~ p(z)`` from ``u ~ U[0, 1]^{1+D}``: the class coordinate (``u_0 < P(house)`` is a house), then
        the truncated normals' inverse CDFs and the uniforms' at ``u_i``: the prior transform of nested samplers.

        Raises
        ------
        InvalidInputError
            ``u`` is not ``(N, 1 + D)`` or leaves ``[0, 1]``.

        Examples
        --------
        >>> world = HouseRocketWorld(circle=True)
        >>> z = world.from_unit_cube(torch.rand(8, world.unit_cube_dim))
        >>> z.shape, bool(torch.isfinite(world.log_prob(z)).all())
        (torch.Size([8, 6]), True)
        >>> world.from_unit_cube(torch.full((1, 7), 1.5))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ppl_audit.errors.InvalidInputError: HouseRocketWorld.from_unit_cube: u leaves the unit cube [0, 1]: ...
        """
        u = check_unit_cube(u, self.unit_cube_dim, type(self).__name__)
        return self.distribution().from_unit_cube(u.to(self._loc.device)).to(u.device)

    def class_posterior(self, z: torch.Tensor) -> torch.Tensor:
        """``P(class | z)`` ``(N, 2)`` over :attr:`class_names`: the world's labels, from its own densities.

        The renders depend on ``z`` alone, so this is also the Bayes-optimal ``P(class | image)``: what a
        perfectly calibrated classifier would say, and what a calibration audit checks against.

        Examples
        --------
        >>> world = HouseRocketWorld()
        >>> p = world.class_posterior(torch.tensor([[10.0, 30.0, 5.0], [20.0, 10.0, 12.0]]))
        >>> p.argmax(-1).tolist()  # a tall thin shape is a rocket, a wide low one a house
        [0, 1]
        """
        return self.distribution().class_posterior(z.to(self._loc.device))

    def sample_with_class(self, n: int, *, generator: torch.Generator | None = None):
        """Draw ``n`` latents with their classes: ``(z (n, D), c (n,))``."""
        return self.distribution().sample_with_class((n,), generator=generator)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[-1] != self.latent_dim:
            raise InvalidInputError(
                f"latents must have shape (N, {self.latent_dim}) for world {self.name!r}, "
                f"got {tuple(z.shape)}"
            )
        circle = (z[:, 3], z[:, 4], z[:, 5]) if self.circle else None
        return render_shapes(z[:, 0], z[:, 1], z[:, 2], circle)


def make_world(name: str, *, device="cpu") -> HouseRocketWorld:
    """Build a built-in world by name (``"house-rocket"`` or ``"house-rocket-circle"``).

    Examples
    --------
    >>> make_world("house-rocket-circle").latent_names
    ('w', 'h', 't', 'r', 'cx', 'cy')
    """
    if name not in WORLDS:
        raise InvalidInputError(f"unknown world {name!r}; known worlds: {', '.join(WORLDS)}")
    return HouseRocketWorld(circle=name == WORLDS[1], device=device)


__all__ = [
    "CIRCLE_CENTRE_RANGE",
    "CIRCLE_RADIUS",
    "CLASS_NAMES",
    "HOUSE_PROBABILITY",
    "HOUSE_ROOF",
    "HOUSE_SHAPE",
    "ROCKET_SHAPE",
    "WORLDS",
    "HouseRocketWorld",
    "make_world",
]
