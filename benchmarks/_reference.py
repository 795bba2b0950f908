"""Reference posteriors for level-set benchmarks, and how to compare a sampler with them (issue 21).

Two estimators of a level set's posterior means and evidence, each with its Monte Carlo standard error:

* :func:`prior_importance`: importance sampling from the prior, streamed in chunks so memory stays
  bounded at any number of draws. With ``w_i = L(z_i)`` (the likelihood; the prior cancels) the
  self-normalised mean is ``sum w_i x_i / sum w_i``, its MCSE the delta-method one,
  ``sqrt(sum w_i^2 (x_i - mean)^2) / sum w_i`` (Owen 2013, *Monte Carlo theory, methods and examples*,
  Eq. 9.8), the evidence ``log Z = logsumexp(log w) - log N`` and its standard error
  ``sqrt(1 / ESS - 1 / N)`` (the relative sd of the mean weight), ``ESS = (sum w)^2 / sum w^2`` (Kish).
* :func:`runs_summary`: a sampler's independent runs (SMC's runs, the superchains of nested R-hat; or
  seeds): the mean of the run means, MCSE ``sd(run means) / sqrt(R)``; the evidence pooled as
  ``log mean_r Z_r`` (SMC's ``Z_r`` is unbiased), standard error ``sd(Z_r) / (sqrt(R) mean Z_r)``.

Both describe a posterior by the same quantities, the means of every latent and of every predicted class
probability, so :func:`z_scores` compares any two of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

IS_CHUNK = 65_536  # prior draws per chunk: ~40 MB of float64 moments at 10 classes, far below a GPU's memory


@dataclass(frozen=True)
class PosteriorEstimate:
    """Posterior means of the latents and predicted class probabilities, with MCSEs, and log Z.

    ``names`` lists the quantities in order: the latents' names, then ``p_<class>``.
    """

    names: tuple[str, ...]
    mean: tuple[float, ...]
    mcse: tuple[float, ...]
    sd: tuple[float, ...]
    log_z: float
    log_z_se: float
    ess: float
    evaluations: int
    seconds: float
    method: str

    def to_json(self) -> dict:
        """JSON-safe dict, one entry per quantity under ``quantities``."""
        d = asdict(self)
        d["order"] = list(self.names)  # the quantities' order (JSON writers may sort the dict's keys)
        d["quantities"] = {n: {"mean": m, "mcse": s, "sd": v} for n, m, s, v in zip(self.names, self.mean,
                                                                                      self.mcse, self.sd)}
        for key in ("names", "mean", "mcse", "sd"):  # kept per quantity under "quantities"
            del d[key]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "PosteriorEstimate":
        q = d["quantities"]
        names = tuple(d.get("order") or q)
        return cls(names, tuple(q[n]["mean"] for n in names), tuple(q[n]["mcse"] for n in names),
                   tuple(q[n]["sd"] for n in names), d["log_z"], d["log_z_se"], d["ess"], d["evaluations"],
                   d["seconds"], d["method"])


def quantity_names(level_set) -> tuple[str, ...]:
    """The latents' names, then ``p_<class>`` for every class of the level set's classifier."""
    return tuple(level_set.prior.latent_names) + tuple(f"p_{c}" for c in level_set.classifier.class_names)


class _WeightedMoments:
    """Streaming self-normalised importance moments, kept on a running log scale (float64)."""

    def __init__(self):
        self.shift = -math.inf  # log of the scale every running sum is divided by
        self.n = 0
        self.w1 = self.w2 = 0.0
        self.a1 = self.a2 = self.b1 = self.b2 = None  # sum w x, sum w x^2, sum w^2 x, sum w^2 x^2

    def add(self, log_w: torch.Tensor, x: torch.Tensor) -> None:
        log_w, x = log_w.double(), x.double()
        self.n += log_w.shape[0]
        finite = torch.isfinite(log_w)
        if not finite.any():
            return
        new_shift = max(self.shift, float(log_w[finite].max()))
        rescale = math.exp(self.shift - new_shift) if self.shift > -math.inf else 0.0
        w = torch.exp(log_w - new_shift).where(finite, torch.zeros_like(log_w))
        w2 = w * w
        sums = (w.sum(), w2.sum(), w @ x, w @ x.square(), w2 @ x, w2 @ x.square())
        if self.a1 is None:
            self.a1 = self.a2 = self.b1 = self.b2 = torch.zeros_like(sums[2])
        self.w1 = self.w1 * rescale + float(sums[0])
        self.w2 = self.w2 * rescale ** 2 + float(sums[1])
        self.a1 = self.a1 * rescale + sums[2]
        self.a2 = self.a2 * rescale + sums[3]
        self.b1 = self.b1 * rescale ** 2 + sums[4]
        self.b2 = self.b2 * rescale ** 2 + sums[5]
        self.shift = new_shift

    def result(self) -> dict:
        if self.a1 is None or self.w1 == 0.0:
            raise ValueError("no draw had a finite likelihood: the level set is empty under the prior's draws")
        mean = self.a1 / self.w1
        var = (self.a2 / self.w1 - mean.square()).clamp(min=0)
        # sum w^2 (x - mean)^2 / (sum w)^2, expanded so that it streams
        mcse = ((self.b2 - 2 * mean * self.b1 + mean.square() * self.w2).clamp(min=0)).sqrt() / self.w1
        ess = self.w1 ** 2 / self.w2
        log_z = math.log(self.w1) + self.shift - math.log(self.n)
        return {"mean": mean, "sd": var.sqrt(), "mcse": mcse, "ess": ess, "log_z": log_z,
                "log_z_se": math.sqrt(max(1.0 / ess - 1.0 / self.n, 0.0))}


def prior_importance(level_set, draws: int, *, seed: int, device="cpu", chunk_size: int = IS_CHUNK,
                     progress=None) -> PosteriorEstimate:
    """Importance sampling from the prior: ``draws`` prior draws weighted by the level set's likelihood.

    Parameters
    ----------
    level_set : ppl_audit.levelset.LevelSet
    draws : int
        Prior draws in all, taken ``chunk_size`` at a time (memory stays that of one chunk).
    seed : int
        Seeds the draws' generator.

    Examples
    --------
    >>> from ppl_audit.levelset import LevelSet
    >>> from ppl_audit.priors import HouseRocketWorld
    >>> clf = lambda x: torch.stack([1 - x.mean((1, 2, 3)), x.mean((1, 2, 3))], -1)
    >>> est = prior_importance(LevelSet(HouseRocketWorld(), clf, [0.9, 0.1]), 2000, seed=0, chunk_size=500)
    >>> est.names, est.ess > 100
    (('w', 'h', 't', 'p_rocket', 'p_house'), True)
    """
    gen = torch.Generator(device=device).manual_seed(int(seed))
    acc = _WeightedMoments()
    start = time.perf_counter()
    done = 0
    with torch.no_grad():
        while done < draws:
            n = min(chunk_size, draws - done)
            z = level_set.prior.sample(n, generator=gen).to(device)
            probs = level_set.predict(z)
            log_w = level_set.log_likelihood(probs)
            if torch.isnan(log_w).any() or (log_w == math.inf).any():
                raise ValueError("the level set's log likelihood returned NaN or +inf on prior draws")
            acc.add(log_w.cpu(), torch.cat([z, probs], dim=1).cpu())
            done += n
            if progress is not None:
                progress(done, draws)
    r = acc.result()
    return PosteriorEstimate(quantity_names(level_set), tuple(r["mean"].tolist()), tuple(r["mcse"].tolist()),
                             tuple(r["sd"].tolist()), r["log_z"], r["log_z_se"], r["ess"], draws,
                             time.perf_counter() - start, "prior-importance")


def shared_prior_importance(level_sets, quantities, draws: int, *, seed: int, device="cpu",
                            chunk_size: int = IS_CHUNK) -> list[dict]:
    """:func:`prior_importance` of several level sets of one prior and classifier, from one pool of draws.

    Each chunk of prior draws is decoded and classified once; each level set weights it by its own
    likelihood. ``quantities(z, probs) -> (N, Q)`` says what to average (a calibration grid's true-class
    posterior, say). Returns, per level set, :class:`_WeightedMoments`' result: ``mean``, ``mcse``, ``ess``.

    Examples
    --------
    >>> from ppl_audit.levelset import LevelSet
    >>> from ppl_audit.priors import HouseRocketWorld
    >>> world = HouseRocketWorld()
    >>> clf = lambda x: torch.stack([1 - x.mean((1, 2, 3)), x.mean((1, 2, 3))], -1)
    >>> sets = [LevelSet(world, clf, [1 - p, p], concentration=50.0) for p in (0.1, 0.2)]
    >>> out = shared_prior_importance(sets, lambda z, probs: probs[:, 1:], 4000, seed=0, chunk_size=1000)
    >>> [round(float(r["mean"][0]), 1) for r in out]
    [0.1, 0.2]
    """
    gen = torch.Generator(device=device).manual_seed(int(seed))
    moments = [_WeightedMoments() for _ in level_sets]
    first, done = level_sets[0], 0
    with torch.no_grad():
        while done < draws:
            n = min(chunk_size, draws - done)
            z = first.prior.sample(n, generator=gen).to(device)
            probs = first.predict(z)
            x = quantities(z, probs).cpu()
            for level_set, acc in zip(level_sets, moments):
                acc.add(level_set.log_likelihood(probs).cpu(), x)
            done += n
    return [acc.result() for acc in moments]


def pooled_log_evidence(log_z_runs) -> tuple[float, float]:
    """``log mean_r Z_r`` and its standard error ``sd(Z_r) / (sqrt(R) mean_r Z_r)`` (R >= 2).

    Examples
    --------
    >>> round(pooled_log_evidence([0.0, 0.0, 0.0])[0], 6), pooled_log_evidence([0.0, 0.0])[1]
    (0.0, 0.0)
    """
    lz = torch.as_tensor(list(log_z_runs), dtype=torch.float64)
    if lz.numel() < 2:
        raise ValueError(f"the evidence's spread needs at least 2 independent runs, got {lz.numel()}")
    top = lz.max()
    z = torch.exp(lz - top)
    return float(top + z.mean().log()), float(z.std() / (math.sqrt(lz.numel()) * z.mean()))


def runs_summary(run_means: torch.Tensor, run_sds: torch.Tensor, log_z_runs, names, *, evaluations: int,
                 seconds: float, method: str) -> PosteriorEstimate:
    """A :class:`PosteriorEstimate` from ``R`` independent, equally sized runs' means ``(R, Q)``.

    The estimate is the mean of the run means; its MCSE their sd over ``sqrt(R)``; the ESS the
    smallest over quantities of ``(posterior sd / MCSE)^2``.
    """
    run_means = run_means.double()
    r = run_means.shape[0]
    if r < 2:
        raise ValueError(f"an MCSE from independent runs needs at least 2 runs, got {r}")
    mean = run_means.mean(0)
    mcse = run_means.std(0) / math.sqrt(r)
    sd = run_sds.double().mean(0)
    ess = float(((sd / mcse.clamp(min=1e-300)) ** 2).min())
    log_z, log_z_se = pooled_log_evidence(log_z_runs)
    return PosteriorEstimate(tuple(names), tuple(mean.tolist()), tuple(mcse.tolist()), tuple(sd.tolist()),
                             log_z, log_z_se, ess, int(evaluations), float(seconds), method)


def smc_runs(result) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Per-run posterior means and sds ``(R, D + K)`` of a level-set SMC result, and the runs' log Z.

    A run's draws are its particles' final moves at the posterior (``chain.trace``), latents then
    predictions; the runs are the chain's superchains.
    """
    chain = result.chain
    runs = chain.superchains or 1
    x = torch.cat([chain.trace, chain.extras_trace], dim=-1).double()  # (N, draws, D + K)
    x = x.reshape(runs, -1, x.shape[-1])
    return x.mean(1), x.std(1), list(chain.info["log_evidence"])


def z_scores(estimate: PosteriorEstimate, reference: PosteriorEstimate) -> dict:
    """Per quantity ``(mean - reference mean) / sqrt(mcse^2 + reference mcse^2)``, and log Z's the same way.

    Examples
    --------
    >>> a = PosteriorEstimate(("x",), (1.0,), (0.3,), (1.0,), 0.0, 0.3, 10.0, 1, 1.0, "a")
    >>> b = PosteriorEstimate(("x",), (0.0,), (0.4,), (1.0,), 1.0, 0.4, 10.0, 1, 1.0, "b")
    >>> z = z_scores(a, b)
    >>> z["quantities"]["x"], z["log_z"], z["max_abs"]
    (2.0, -2.0, 2.0)
    """
    if set(estimate.names) != set(reference.names):
        raise ValueError(f"quantities differ: {estimate.names} vs {reference.names}")
    ref = {n: (m, s) for n, m, s in zip(reference.names, reference.mean, reference.mcse)}  # matched by name
    zs = {n: (m - ref[n][0]) / math.sqrt(s ** 2 + ref[n][1] ** 2) if (s or ref[n][1]) else 0.0
          for n, m, s in zip(estimate.names, estimate.mean, estimate.mcse)}
    se = math.sqrt(estimate.log_z_se ** 2 + reference.log_z_se ** 2)
    log_z = (estimate.log_z - reference.log_z) / se if se > 0 else 0.0
    return {"quantities": zs, "max_abs": max(abs(v) for v in zs.values()), "log_z": log_z}


# ---------------------------------------------------------------- the level-set benchmark cases (issue 21)
# name: (world, target name, concentration). House/rocket targets are the demo's ambiguous (0.5, 0.5);
# MNIST targets are the MNIST audit file's (analyses/mnist-levelsets.toml, as benchmarks/mnist_levelsets.py).
CASES = {
    "circle-c10": ("house-rocket-circle", "ambiguous", 10.0),
    "circle-c1000": ("house-rocket-circle", "ambiguous", 1000.0),
    "house-rocket-c10": ("house-rocket", "ambiguous", 10.0),
    "house-rocket-c1000": ("house-rocket", "ambiguous", 1000.0),
    "vae-ambiguous-c10": ("mnist-vae", "ambiguous", 10.0),
    "vae-1-vs-7-c10": ("mnist-vae", "1-vs-7", 10.0),
    "gan-ambiguous-c10": ("mnist-gan", "ambiguous", 10.0),
    "gan-1-vs-7-c10": ("mnist-gan", "1-vs-7", 10.0),
}
QUICK_CASES = ("house-rocket-c10",)
MNIST_AUDIT_FILE = Path(__file__).resolve().parents[1] / "analyses" / "mnist-levelsets.toml"


@dataclass
class Case:
    """One benchmark level set: the model pieces and the audit's particle count for the default method."""

    name: str
    world: str
    target_name: str
    target: tuple[float, ...]
    concentration: float
    prior: object
    classifier: object
    particles: int
    device: str = "cpu"

    def level_set(self):
        from ppl_audit.levelset import LevelSet

        return LevelSet(self.prior, self.classifier, list(self.target), self.concentration)

    def settings(self) -> dict:
        return {"world": self.world, "target_name": self.target_name, "target": list(self.target),
                "concentration": self.concentration, "particles": self.particles}


_LOADED: dict = {}


def load_case(name: str, *, data_dir=None, cache_dir=None, device="cpu") -> Case:
    """Build a case of :data:`CASES` (models loaded once per process; MNIST ones trained on first use).

    Particles: the house/rocket demo's (``LevelSetAuditSpec().num_particles``) or the MNIST audit
    file's ``num_particles``.
    """
    from ppl_audit.audits import load_audit_file
    from ppl_audit.audits import worlds as registry
    from ppl_audit.audits.levelset import LevelSetAuditSpec

    world, target_name, concentration = CASES[name]
    if registry.world_family(world) == registry.MNIST:
        _, spec, _ = load_audit_file(MNIST_AUDIT_FILE)
    else:
        spec = LevelSetAuditSpec()
    target = next(t.probabilities for t in spec.targets if t.name == target_name)
    key = (spec.classifier, world, str(device))
    if key not in _LOADED:
        was = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # training on first use needs gradients
        try:
            clf = registry.load_classifier(spec.classifier, device=device, cache=cache_dir, data_dir=data_dir)
            prior = registry.load_world(world, device=device, cache=cache_dir, data_dir=data_dir)
        finally:
            torch.set_grad_enabled(was)
        _LOADED[key] = (prior, clf)
    prior, clf = _LOADED[key]
    return Case(name, world, target_name, tuple(target), concentration, prior, clf, spec.num_particles, str(device))
