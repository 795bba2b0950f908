"""An ensemble of MLP VAEs evaluated in one batched pass: the likelihoods behind a WAIC detector.

Choi, Jang & Alemi (2018), "WAIC, but Why? Generative Ensembles for Robust
Anomaly Detection", score an input by the spread of its log-likelihood over an
ensemble of independently trained generative models (WAIC = mean over members
minus variance over members). This module provides the ensemble: ``K`` VAEs of
the architecture of :class:`ppl_audit.generative.vae.VAE` (Bernoulli
likelihood on the 784 pixels, MLP encoder and mirrored decoder, diagonal
Gaussian ``q(z | x)``, ``N(0, I)`` prior) whose parameters are stacked along a
leading member axis, so that every member runs in one batched matrix product::

    weight (K, out, in) @ activations (K, M, in) -> (K, M, out)    torch.baddbmm

Members differ only by their initialisation: member ``k`` starts from exactly
the weights a single :class:`VAE` built under seed ``seed + k`` starts from.
They are trained together (one Adam over the stacked parameters, the same
minibatch for every member, the loss summed over members so each member's
gradient is exactly its own).

Per-member quantities, each ``(K, N)`` nats:

* :meth:`VAEEnsemble.elbo`: one-sample ELBO with closed-form KL (Kingma &
  Welling 2014, eq. 10), optionally with the KL weighted by ``beta``
  (Higgins et al. 2017);
* :meth:`VAEEnsemble.log_likelihood`: the importance-weighted bound (Burda et
  al. 2016, eq. 8) ``log (1/S) sum_s p(x | z_s) p(z_s) / q(z_s | x)``,
  ``z_s ~ q(z | x)``, a tighter estimate of ``log p(x)`` than the ELBO;
* :meth:`VAEEnsemble.rate`: ``KL(q(z | x) || N(0, I))`` in closed form.

Examples
--------
>>> ensemble = VAEEnsemble(members=3, latent_dim=2, hidden=(16,), seed=0)
>>> x = torch.rand(4, 1, 28, 28)
>>> ensemble.log_likelihood(x, num_samples=8, generator=torch.Generator().manual_seed(0)).shape
torch.Size([3, 4])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import ContinuousBernoulli

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard
from ppl_audit.validators import check_images, is_positive_float, is_positive_int
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.generative.common import (
    IMAGE_SHAPE,
    NUM_PIXELS,
    NUM_REPORT_COLUMNS,
    SAMPLE_SEED,
)
from ppl_audit.generative.vae import LIKELIHOODS, VAE
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import (
    CardConfig,
    DataConfig,
    Stopwatch,
    TrainedModel,
    Trainer,
    TrainResult,
    check_field,
    load_training_data,
    minibatches,
    seeded,
)

KIND = "vae-ensemble"  # the [model] kind of VAE-ensemble cards
MIN_MEMBERS = 2  # an ensemble of one has no variance over members, so no WAIC penalty
IWAE_SAMPLES = 16  # importance samples of the reported log-likelihood (Burda et al.'s k; tight to ~1 nat on MNIST)
LATENTS_PER_PASS = 8192  # members x samples x images decoded at once: ~50 MB of activations at widths 512/784
EVAL_SEED = 1  # seeds the reparameterisation noise of the reported (test) ELBO and log-likelihood
TRAINING_TASK = "training VAE ensemble"  # progress task name
LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- batched layers


class EnsembleLinear(nn.Module):
    """``K`` independent linear layers applied in one batched product.

    ``weight`` is ``(K, out, in)`` and ``bias`` ``(K, out)``: member ``k``'s
    slices have the shapes and meaning of an ``nn.Linear(in, out)``'s.

    Parameters
    ----------
    members, in_features, out_features : int
    initialise : bool
        Draw ``nn.Linear``'s default initialisation for every member (global
        RNG); ``False`` leaves the weights uninitialised for a caller that
        loads them (as :class:`VAEEnsemble` does).

    Examples
    --------
    >>> layer = EnsembleLinear(3, 4, 2)
    >>> layer(torch.rand(5, 4)).shape, layer(torch.rand(3, 5, 4)).shape
    (torch.Size([3, 5, 2]), torch.Size([3, 5, 2]))
    """

    def __init__(self, members: int, in_features: int, out_features: int, *, initialise: bool = True):
        super().__init__()
        self.members, self.in_features, self.out_features = int(members), int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.empty(self.members, self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.members, self.out_features))
        if initialise:
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``nn.Linear``'s default initialisation, member by member (global RNG)."""
        bound = 1.0 / math.sqrt(self.in_features)
        for k in range(self.members):  # K small draws at construction time, not a hot path
            nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))
            nn.init.uniform_(self.bias[k], -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, in)`` (one input shared by every member) or ``(K, M, in)`` -> ``(K, M, out)``."""
        if x.ndim == 2:  # shared input: one GEMM against every member's weights at once
            out = x @ self.weight.reshape(-1, self.in_features).T
            return out.view(x.shape[0], self.members, self.out_features).transpose(0, 1) + self.bias[:, None]
        return torch.baddbmm(self.bias[:, None], x, self.weight.transpose(1, 2))


def _ensemble_mlp(members: int, sizes, final_activation: bool) -> nn.Sequential:
    """Mirror of ``vae._mlp``: the same module indices, so state-dict keys match a single VAE's.

    Uninitialised: :class:`VAEEnsemble` loads its members' weights into it.
    """
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(EnsembleLinear(members, a, b, initialise=False))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _EnsembleEncoder(nn.Module):
    def __init__(self, members: int, latent_dim: int, hidden):
        super().__init__()
        self.body = _ensemble_mlp(members, [NUM_PIXELS, *hidden], final_activation=True)
        self.head = EnsembleLinear(members, hidden[-1], 2 * latent_dim, initialise=False)

    def forward(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.head(self.body(flat)).chunk(2, dim=-1)
        return mean, log_var


class _EnsembleDecoder(nn.Module):
    def __init__(self, members: int, latent_dim: int, hidden):
        super().__init__()
        self.net = _ensemble_mlp(members, [latent_dim, *hidden, NUM_PIXELS], final_activation=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


# --------------------------------------------------------------------------- the ensemble


def _architecture(vae: VAE) -> dict:
    """The fields two members must share: latent size, encoder and decoder widths, likelihood."""
    linears = [m for m in vae.encoder.body if isinstance(m, nn.Linear)]
    decoder = [m for m in vae.decoder.net if isinstance(m, nn.Linear)]
    return {"latent_dim": vae.latent_dim,
            "hidden": tuple(m.out_features for m in linears),
            "decoder_hidden": tuple(m.out_features for m in decoder[:-1]),
            "likelihood": vae.decoder.likelihood}


def _standard_normal(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _check_finite(values: torch.Tensor, what: str) -> torch.Tensor:
    """Raise :class:`ModelOutputError` unless every entry of a ``(K, N)`` result is finite."""
    bad = ~torch.isfinite(values.detach())
    if bool(bad.any()):
        inputs = int(bad.any(0).sum())
        members = bad.any(1).nonzero().flatten().tolist()
        raise ModelOutputError(
            f"the VAE ensemble's {what} is NaN or infinite for {inputs} of {values.shape[1]} inputs "
            f"(members {members} of {values.shape[0]}); a member's weights are NaN or it diverged"
        )
    return values


class VAEEnsemble(nn.Module):
    """``K`` MLP VAEs with stacked parameters, every method batched over members.

    The state dict has the keys of a single :class:`~ppl_audit.generative.vae.VAE`
    (``encoder.body.0.weight``, ..., ``decoder.net.4.bias``) with a leading
    member axis; :meth:`member` slices one out and :meth:`from_members` stacks
    trained VAEs.

    Parameters
    ----------
    members : int
        ``K``.
    latent_dim : int
        ``D``.
    hidden : sequence of int
        Encoder widths; the decoder mirrors them (as in :class:`VAE`).
    likelihood : str
        ``"bernoulli"`` or ``"continuous-bernoulli"`` (see :mod:`ppl_audit.generative.vae`).
    seed : int, optional
        Member ``k`` is initialised under seed ``seed + k``, exactly as
        ``VAE(latent_dim, hidden, likelihood)`` built under that seed; without
        a seed, torch's global generator is used.

    Examples
    --------
    >>> ensemble = VAEEnsemble(members=2, latent_dim=3, hidden=(16,), seed=0)
    >>> with seeded(1):
    ...     second = VAE(3, (16,))
    >>> bool(torch.equal(ensemble.member(1).decoder.net[0].weight, second.decoder.net[0].weight))
    True
    """

    def __init__(self, members: int = 5, latent_dim: int = 16, hidden=(512, 256), likelihood: str = "bernoulli",
                 *, seed: int | None = None):
        super().__init__()
        if not is_positive_int(members):
            raise InvalidInputError(f"members must be a positive integer, got {members!r}")
        if likelihood not in LIKELIHOODS:
            raise InvalidInputError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.num_members = int(members)
        self.latent_dim = int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.likelihood = likelihood
        self.encoder = _EnsembleEncoder(self.num_members, self.latent_dim, self.hidden)
        self.decoder = _EnsembleDecoder(self.num_members, self.latent_dim, tuple(reversed(self.hidden)))
        singles = []
        for k in range(self.num_members):
            if seed is None:
                singles.append(VAE(self.latent_dim, self.hidden, likelihood))
            else:
                with seeded(seed + k):
                    singles.append(VAE(self.latent_dim, self.hidden, likelihood))
        self._load_members(singles)

    # ----------------------------------------------------------------------- members in and out

    @torch.no_grad()
    def _load_members(self, vaes) -> None:
        states = [v.state_dict() for v in vaes]
        device = next(self.parameters()).device
        self.load_state_dict({name: torch.stack([s[name].to(device) for s in states]) for name in states[0]})

    @classmethod
    def from_members(cls, vaes) -> "VAEEnsemble":
        """Stack trained single VAEs into one ensemble (on the first member's device).

        Parameters
        ----------
        vaes : sequence of VAE
            Members of one architecture.

        Raises
        ------
        InvalidInputError
            No members, a member that is not a :class:`VAE`, or members that
            differ in architecture (the message names the first mismatched field).

        Examples
        --------
        >>> ensemble = VAEEnsemble.from_members([VAE(2, (8,)), VAE(2, (8,))])
        >>> ensemble.num_members
        2
        >>> try:
        ...     VAEEnsemble.from_members([VAE(2, (8,)), VAE(3, (8,))])
        ... except InvalidInputError as exc:
        ...     print(exc)
        members of a VAE ensemble must share one architecture: member 1 has latent_dim=3, member 0 has latent_dim=2
        """
        vaes = list(vaes)
        if not vaes:
            raise InvalidInputError("a VAE ensemble needs at least one member, got none")
        for i, vae in enumerate(vaes):
            if not isinstance(vae, VAE):
                raise InvalidInputError(f"member {i} must be a ppl_audit.generative.vae.VAE, got {type(vae).__name__}")
        first = _architecture(vaes[0])
        for i, vae in enumerate(vaes[1:], start=1):
            arch = _architecture(vae)
            for name, value in first.items():
                if arch[name] != value:
                    raise InvalidInputError(
                        "members of a VAE ensemble must share one architecture: "
                        f"member {i} has {name}={arch[name]!r}, member 0 has {name}={value!r}"
                    )
        device = next(vaes[0].parameters()).device
        ensemble = cls(len(vaes), first["latent_dim"], first["hidden"], first["likelihood"], seed=0).to(device)
        ensemble._load_members(vaes)
        return ensemble

    @torch.no_grad()
    def member(self, k: int) -> VAE:
        """Member ``k`` as a plain :class:`VAE` (a copy, on this ensemble's device and in its mode).

        Examples
        --------
        >>> VAEEnsemble(2, 3, (8,)).member(1).latent_dim
        3
        """
        if not (isinstance(k, int) and 0 <= k < self.num_members):
            raise InvalidInputError(f"member index must be an integer in [0, {self.num_members}), got {k!r}")
        device = next(self.parameters()).device
        vae = VAE(self.latent_dim, self.hidden, self.likelihood).to(device)
        vae.load_state_dict({name: value[k] for name, value in self.state_dict().items()})
        return vae.train(self.training)

    # ----------------------------------------------------------------------- the networks

    def _chunk(self, chunk: int | None, samples: int) -> int:
        if chunk is None:
            return max(1, LATENTS_PER_PASS // (self.num_members * samples))
        if not is_positive_int(chunk):
            raise InvalidInputError(f"chunk must be a positive integer (images per pass), got {chunk!r}")
        return chunk

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, IMAGE_SHAPE)
        first = next(self.parameters())
        return x.to(device=first.device, dtype=first.dtype).flatten(1)

    def encode(self, x: torch.Tensor, *, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log_var)`` of every member's ``q(z | x)``, each ``(K, N, D)``.

        Parameters
        ----------
        x : torch.Tensor
            Images ``(N, 1, 28, 28)`` in ``[0, 1]``.
        chunk : int, optional
            Images per pass (default: a memory budget of ``LATENTS_PER_PASS`` members x images).

        Examples
        --------
        >>> mean, log_var = VAEEnsemble(2, 3, (8,)).encode(torch.rand(4, 1, 28, 28))
        >>> mean.shape
        torch.Size([2, 4, 3])
        """
        flat = self._flat(x)
        parts = [self.encoder(c) for c in flat.split(self._chunk(chunk, 1))]
        return torch.cat([m for m, _ in parts], dim=1), torch.cat([v for _, v in parts], dim=1)

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits of each member's likelihood: ``z (K, ..., D)`` -> ``(K, ..., 784)``.

        Examples
        --------
        >>> VAEEnsemble(2, 3, (8,)).decoder_logits(torch.zeros(2, 5, 7, 3)).shape
        torch.Size([2, 5, 7, 784])
        """
        if z.ndim < 2 or z.shape[0] != self.num_members or z.shape[-1] != self.latent_dim:
            raise InvalidInputError(
                f"latents must have shape ({self.num_members}, ..., {self.latent_dim}), got {tuple(z.shape)}"
            )
        lead = z.shape[1:-1]
        return self.decoder(z.reshape(self.num_members, -1, self.latent_dim)).view(
            self.num_members, *lead, NUM_PIXELS)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Each member's image (the likelihood's mean): ``z (K, ..., D)`` -> ``(K, ..., 1, 28, 28)`` in ``[0, 1]``.

        Examples
        --------
        >>> VAEEnsemble(2, 3, (8,)).decode(torch.zeros(2, 4, 3)).shape
        torch.Size([2, 4, 1, 28, 28])
        """
        logits = self.decoder_logits(z)
        mean = torch.sigmoid(logits) if self.likelihood == "bernoulli" else ContinuousBernoulli(logits=logits).mean
        return mean.view(*logits.shape[:-1], *IMAGE_SHAPE)

    def _log_lik(self, flat: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` summed over pixels: ``flat (n, 784)``, ``logits (K, ..., n, 784)`` -> ``(K, ..., n)``."""
        target = flat.expand_as(logits)
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        return ContinuousBernoulli(logits=logits).log_prob(target).sum(-1)

    def _elbo_terms(self, flat: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x | z), KL)`` each ``(K, n)`` for flat images and standard normal ``noise (K, n, D)``."""
        mean, log_var = self.encoder(flat)
        z = mean + torch.exp(0.5 * log_var) * noise
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)  # KL(N(m, s^2) || N(0, I)), closed form
        return self._log_lik(flat, self.decoder(z)), kl

    def _noise(self, noise, shape, generator, device, name: str) -> torch.Tensor:
        if noise is None:
            return _standard_normal(shape, generator, device)
        if tuple(noise.shape) != tuple(shape):
            raise InvalidInputError(f"{name} must have shape {tuple(shape)}, got {tuple(noise.shape)}")
        return noise.to(device)

    def elbo(self, x: torch.Tensor, beta: float = 1.0, generator: torch.Generator | None = None, *,
             noise: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
        """One-sample ELBO of every member, ``(K, N)`` nats (Kingma & Welling 2014, eq. 10).

        ``log p(x | z) - beta * KL(q(z | x) || N(0, I))`` with one
        reparameterised draw ``z = mean + exp(log_var / 2) * eps`` per member
        and image and the KL in closed form.

        Parameters
        ----------
        x : torch.Tensor
            Images ``(N, 1, 28, 28)`` in ``[0, 1]``.
        beta : float
            Weight of the KL (1: the ELBO; a beta-VAE's training objective otherwise).
        generator : torch.Generator, optional
            Draws ``eps`` (chunk by chunk, shape ``(K, n, D)``).
        noise : torch.Tensor, optional
            ``eps`` itself, ``(K, N, D)`` (common random numbers, tests).
        chunk : int, optional
            Images per pass.

        Raises
        ------
        InvalidInputError
            Bad images or noise shape.
        ModelOutputError
            A non-finite ELBO (the message counts the inputs and names the members).

        Examples
        --------
        >>> ensemble = VAEEnsemble(2, 3, (8,), seed=0)
        >>> ensemble.elbo(torch.rand(5, 1, 28, 28), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 5])
        """
        flat = self._flat(x)
        shape = (self.num_members, len(flat), self.latent_dim)
        noise = self._noise(noise, shape, generator, flat.device, "noise") if noise is not None else None
        out, size = [], self._chunk(chunk, 1)
        for start in range(0, len(flat), size):
            part = flat[start:start + size]
            eps = (noise[:, start:start + size] if noise is not None
                   else _standard_normal((self.num_members, len(part), self.latent_dim), generator, flat.device))
            log_lik, kl = self._elbo_terms(part, eps)
            out.append(log_lik - beta * kl)
        return _check_finite(torch.cat(out, dim=1) if out else flat.new_zeros(self.num_members, 0), "ELBO")

    def log_likelihood(self, x: torch.Tensor, num_samples: int = IWAE_SAMPLES,
                       generator: torch.Generator | None = None, *, noise: torch.Tensor | None = None,
                       chunk: int | None = None, common_draws: bool = False) -> torch.Tensor:
        """Importance-weighted estimate of every member's ``log p(x)``, ``(K, N)`` nats (Burda et al. 2016, eq. 8).

        ``log (1/S) sum_s p(x | z_s) p(z_s) / q(z_s | x)`` with ``z_s ~ q(z | x)``,
        computed with ``logsumexp`` over one batched ``(K, S, n)`` pass per
        chunk. A lower bound on ``log p(x)`` in expectation that tightens as
        ``S`` grows; with ``S = 1`` it is the ELBO with a Monte Carlo KL.

        Parameters
        ----------
        x : torch.Tensor
            Images ``(N, 1, 28, 28)`` in ``[0, 1]``.
        num_samples : int
            ``S``, importance samples per member and image.
        generator : torch.Generator, optional
            Draws ``eps`` chunk by chunk (shape ``(K, S, n, D)``).
        noise : torch.Tensor, optional
            ``eps`` itself, ``(K, S, N, D)``.
        chunk : int, optional
            Images per pass (default: ``LATENTS_PER_PASS // (K * S)``).
        common_draws : bool
            Draw one ``(K, S, D)`` set of ``eps`` and use it for every image
            (common random numbers). An image's estimate then depends on the
            image alone, not on the batch it comes in or its place there,
            which is what a per-input score needs; with independent draws the
            same image's estimate moves with its place by the bound's Monte
            Carlo error. Not with ``noise``.

        Raises
        ------
        InvalidInputError
            Bad images, ``num_samples`` or noise shape.
        ModelOutputError
            A non-finite log-likelihood.

        Examples
        --------
        >>> ensemble = VAEEnsemble(3, 2, (8,), seed=0)
        >>> ll = ensemble.log_likelihood(torch.rand(4, 1, 28, 28), 4, torch.Generator().manual_seed(0))
        >>> ll.shape, bool(ll.lt(0).all())
        (torch.Size([3, 4]), True)
        >>> x = torch.rand(4, 1, 28, 28)
        >>> alone = ensemble.log_likelihood(x[3:], 4, torch.Generator().manual_seed(0), common_draws=True)
        >>> among = ensemble.log_likelihood(x, 4, torch.Generator().manual_seed(0), common_draws=True)
        >>> torch.allclose(alone[:, 0], among[:, 3])
        True
        """
        if not is_positive_int(num_samples):
            raise InvalidInputError(f"num_samples must be a positive integer, got {num_samples!r}")
        flat = self._flat(x)
        k, s, d = self.num_members, num_samples, self.latent_dim
        if noise is not None:
            if common_draws:
                raise InvalidInputError("give noise or common_draws=True, not both")
            noise = self._noise(noise, (k, s, len(flat), d), generator, flat.device, "noise")
        elif common_draws:
            noise = _standard_normal((k, s, 1, d), generator, flat.device).expand(k, s, len(flat), d)
        out, size = [], self._chunk(chunk, s)
        for start in range(0, len(flat), size):
            part = flat[start:start + size]
            n = len(part)
            eps = noise[:, :, start:start + n] if noise is not None else _standard_normal((k, s, n, d), generator,
                                                                                          flat.device)
            mean, log_var = self.encoder(part)  # (K, n, D)
            z = mean[:, None] + torch.exp(0.5 * log_var)[:, None] * eps  # (K, S, n, D)
            log_lik = self._log_lik(part, self.decoder_logits(z))  # (K, S, n)
            log_prior = -0.5 * (z.square() + LOG_2PI).sum(-1)
            log_q = -0.5 * (eps.square() + LOG_2PI + log_var[:, None]).sum(-1)
            out.append(torch.logsumexp(log_lik + log_prior - log_q, dim=1) - math.log(s))
        return _check_finite(torch.cat(out, dim=1) if out else flat.new_zeros(k, 0), "log-likelihood")

    def rate(self, x: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
        """``KL(q(z | x) || N(0, I))`` of every member in closed form, ``(K, N)`` nats.

        Examples
        --------
        >>> rate = VAEEnsemble(2, 3, (8,)).rate(torch.rand(4, 1, 28, 28))
        >>> rate.shape, bool(rate.ge(0).all())
        (torch.Size([2, 4]), True)
        """
        mean, log_var = self.encode(x, chunk=chunk)
        return _check_finite(0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1), "rate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions: each member's decoded posterior mean, ``(K, N, 1, 28, 28)``."""
        return self.decode(self.encode(x)[0])


# --------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class VAEEnsembleConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of a VAE-ensemble card.

    ``independent_batches`` (training): each member draws its own shuffle of
    the training set every epoch, so members differ by initialisation *and*
    data order, as separately trained models would; ``false`` shares one
    minibatch sequence among them.

    Examples
    --------
    >>> VAEEnsembleConfig(members=1)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: members must be an integer >= 2 (an ensemble of one has no variance), got 1
    """

    type: str = "mlp-vae-ensemble"
    members: int = 5
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)
    likelihood: str = "bernoulli"
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    beta: float = 1.0
    independent_batches: bool = False
    seed: int = 0

    TYPE = 'mlp-vae-ensemble'

    def __post_init__(self):
        super().__post_init__()
        check_field(is_positive_int(self.members) and self.members >= MIN_MEMBERS, "members", self.members,
                    f"an integer >= {MIN_MEMBERS} (an ensemble of one has no variance)")
        check_field(is_positive_int(self.latent_dim), "latent_dim", self.latent_dim, "a positive integer")
        check_field(isinstance(self.hidden, tuple) and len(self.hidden) > 0 and all(map(is_positive_int, self.hidden)),
                    "hidden", self.hidden, "a non-empty list of positive integers")
        check_field(self.likelihood in LIKELIHOODS, "likelihood", self.likelihood, f"one of {LIKELIHOODS}")
        check_field(is_positive_float(self.beta), "beta", self.beta, "a number > 0 (the KL weight; 1 is the ELBO)")
        check_field(isinstance(self.independent_batches, bool), "independent_batches", self.independent_batches,
                    "true or false")


def build_vae_ensemble(card: ModelCard) -> VAEEnsemble:
    """The untrained ensemble a card describes (validates the card; members seeded ``seed + k``).

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> build_vae_ensemble(load_card("mnist-vae-ensemble")).num_members
    5
    """
    config = VAEEnsembleConfig.from_card(card)
    DataConfig.from_card(card)
    return VAEEnsemble(config.members, config.latent_dim, config.hidden, config.likelihood, seed=config.seed)


@torch.no_grad()
def evaluate_vae_ensemble(ensemble: VAEEnsemble, images: torch.Tensor, *, seed: int = EVAL_SEED,
                          num_samples: int = IWAE_SAMPLES) -> dict[str, list[float]]:
    """Per-member means over ``images`` of the ELBO, IWAE log-likelihood and rate (nats per image), seeded.

    Returns
    -------
    dict
        ``elbo_nats``, ``log_likelihood_nats`` (``num_samples`` importance
        samples) and ``rate_nats``: lists of ``K`` floats.

    Examples
    --------
    >>> out = evaluate_vae_ensemble(VAEEnsemble(2, 2, (8,), seed=0), torch.rand(5, 1, 28, 28))
    >>> [len(v) for v in out.values()]
    [2, 2, 2]
    """
    was_training = ensemble.training
    ensemble.eval()
    images = images.to(next(ensemble.parameters()).device)
    elbo = ensemble.elbo(images, generator=torch.Generator().manual_seed(seed))
    log_lik = ensemble.log_likelihood(images, num_samples, torch.Generator().manual_seed(seed))
    rate = ensemble.rate(images)
    ensemble.train(was_training)
    return {"elbo_nats": elbo.double().mean(1).tolist(),
            "log_likelihood_nats": log_lik.double().mean(1).tolist(),
            "rate_nats": rate.double().mean(1).tolist()}


def member_minibatches(n: int, batch_size: int, members: int, generator: torch.Generator, device):
    """Index batches ``(members, b)`` covering ``range(n)`` once per member, each member in its own order.

    Examples
    --------
    >>> batches = list(member_minibatches(5, 2, 3, torch.Generator().manual_seed(0), "cpu"))
    >>> [tuple(b.shape) for b in batches]
    [(3, 2), (3, 2), (3, 1)]
    >>> torch.cat(batches, dim=1).sort(dim=1).values.tolist()[0]
    [0, 1, 2, 3, 4]
    """
    order = torch.rand(members, n, generator=generator).argsort(dim=1).to(device)  # one permutation per member
    yield from order.split(batch_size, dim=1)


def train_vae_ensemble(card: ModelCard, *, data_dir=None, device="auto",
                       progress: ProgressFn | None = None) -> TrainResult:
    """Train every member of a VAE-ensemble card together by maximising each member's (beta-)ELBO with Adam.

    One Adam optimiser over the stacked parameters; each step draws one
    minibatch for every member (with ``independent_batches``, one per member
    from its own shuffle) and minimises the sum over members of the mean
    negative ``beta``-ELBO, so each member's gradient (and Adam's elementwise
    update) is exactly what it would be trained alone on that minibatch.

    Returns
    -------
    TrainResult
        ``metrics``: ``test_log_likelihood_nats`` (the headline: IWAE bound,
        ``IWAE_SAMPLES`` samples, mean over members, nats per image; higher is
        better), ``test_elbo_nats``, ``test_rate_nats`` (means over members;
        ELBO with beta = 1) and their per-member lists
        (``*_per_member``), ``members``, ``num_train``, ``num_test``,
        ``seconds``; ``history``: per-epoch running negative beta-ELBO of
        every member.

    Raises
    ------
    ModelOutputError
        A member's loss is not finite at the end of an epoch (it diverged).

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> card = load_card("mnist-vae-ensemble").with_overrides(
    ...     data={"train_split": "test", "num_train": 100}, training={"epochs": 1})
    >>> train_vae_ensemble(card, data_dir="tests/fixtures/data", device="cpu").metrics["members"]  # doctest: +SKIP
    5
    """
    config = VAEEnsembleConfig.from_card(card)
    data = DataConfig.from_card(card)
    device = resolve_device(device)
    watch = Stopwatch()
    train, test = load_training_data(data, data_dir, device)
    ensemble = VAEEnsemble(config.members, config.latent_dim, config.hidden, config.likelihood,
                           seed=config.seed).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(ensemble.parameters(), lr=config.learning_rate)
    k, d = config.members, config.latent_dim
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.epochs * steps_per_epoch
    history: list[list[float]] = []
    step = 0
    ensemble.train()
    for _ in range(config.epochs):
        loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
        batches = (member_minibatches(len(train), config.batch_size, k, generator, device)
                   if config.independent_batches else minibatches(len(train), config.batch_size, generator, device))
        for idx in batches:
            flat = train.images[idx].flatten(-3)  # (B, 784) shared by every member, or (K, B, 784)
            log_lik, kl = ensemble._elbo_terms(flat, _standard_normal((k, flat.shape[-2], d), generator, device))
            negative = -(log_lik - config.beta * kl)  # (K, B)
            loss = negative.mean(1).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum += negative.detach().sum(1).double()
            step += 1
            report(progress, TRAINING_TASK, step, total)
        epoch_loss = loss_sum / len(train)
        diverged = (~torch.isfinite(epoch_loss)).nonzero().flatten().tolist()
        if diverged:  # stop now rather than after the remaining epochs
            raise ModelOutputError(f"{card.name}: members {diverged} of {k} diverged (non-finite loss) in epoch "
                                   f"{len(history) + 1}; lower learning_rate = {config.learning_rate}")
        history.append(epoch_loss.tolist())
    ensemble.eval()
    final = evaluate_vae_ensemble(ensemble, test.images)
    metrics = {
        "test_log_likelihood_nats": sum(final["log_likelihood_nats"]) / k,
        "test_elbo_nats": sum(final["elbo_nats"]) / k,
        "test_rate_nats": sum(final["rate_nats"]) / k,
        "test_log_likelihood_nats_per_member": final["log_likelihood_nats"],
        "test_elbo_nats_per_member": final["elbo_nats"],
        "test_rate_nats_per_member": final["rate_nats"],
        "iwae_samples": IWAE_SAMPLES,
        "members": k,
        "num_train": len(train),
        "num_test": len(test),
        "seconds": float(watch),
    }
    title = ("negative ELBO per image (nats)" if config.beta == 1
             else f"negative beta-ELBO per image (nats, beta = {config.beta:g})")
    curves = {"unit": "epoch",
              "panels": {title: {f"member {m + 1}": [row[m] for row in history] for m in range(k)}}}
    return TrainResult(ensemble.cpu(), metrics, curves)


# --------------------------------------------------------------------------- report and loading


def vae_ensemble_sections(trained: TrainedModel, data_dir=None) -> list:
    """Report sections of a trained ensemble: per-member test metrics and prior samples (reads no data).

    The samples figure has one row per member, decoded from the same
    ``NUM_REPORT_COLUMNS`` prior draws (seed ``SAMPLE_SEED``): rows differ only
    because the members do.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from ppl_audit.cards import load_card
    >>> trained = SimpleNamespace(module=VAEEnsemble(2, 2, (8,)), card=load_card("mnist-vae-ensemble"), info={})
    >>> [s.name for s in vae_ensemble_sections(trained)]
    ['members', 'samples']
    """
    from ppl_audit.report import Section, Table
    from ppl_audit.report.figures import montage_figure, rounded

    ensemble: VAEEnsemble = trained.module
    metrics = (trained.info or {}).get("metrics", {})
    k = ensemble.num_members
    columns = ["member", "test_log_likelihood_nats", "test_elbo_nats", "test_rate_nats"]
    per_member = [metrics.get(f"{c}_per_member") or [None] * k for c in columns[1:]]
    rows = [[m + 1, *(values[m] for values in per_member)] for m in range(k)]
    members = Section("members", "Members", tables=[Table("members", "Test metrics per member (nats per image)",
                                                         columns, rows)],
                      paragraphs=["Each member is a VAE trained from its own initialisation on the same data; "
                                  "the spread of a test image's log-likelihood over members is WAIC's penalty."])
    z = torch.randn(NUM_REPORT_COLUMNS, ensemble.latent_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    device = next(ensemble.parameters()).device
    with torch.no_grad():
        images = ensemble.decode(z.to(device).expand(k, -1, -1)).reshape(-1, *IMAGE_SHAPE).cpu()
    figure = montage_figure(
        "samples", f"{trained.card.name}: samples, z ~ N(0, I), one row per member",
        f"The same {NUM_REPORT_COLUMNS} draws from the {ensemble.latent_dim}-dimensional standard normal prior "
        f"(seed {SAMPLE_SEED}) decoded by each of the {k} members.",
        images, NUM_REPORT_COLUMNS, row_labels=[f"member {m + 1}" for m in range(k)],
        data={"seed": SAMPLE_SEED, "latents": rounded(z)},
    )
    return [members, Section("samples", "Samples", figures=[figure])]


TRAINER = Trainer(
    kind=KIND,
    build=build_vae_ensemble,
    train=train_vae_ensemble,
    headline=("test_log_likelihood_nats", "test IWAE log-likelihood, mean over members (nats per image)"),
    report_sections=vae_ensemble_sections,
    description="ensemble of MLP VAEs of 28 x 28 images trained together (WAIC, Choi, Jang & Alemi 2018)",
)

__all__ = [
    "EnsembleLinear",
    "TRAINER",
    "VAEEnsemble",
    "VAEEnsembleConfig",
    "build_vae_ensemble",
    "evaluate_vae_ensemble",
    "train_vae_ensemble",
]
