"""The out-of-distribution audit: generative-ensemble scores against MNIST (Choi & Jang, Table 2).

In-distribution inputs are the MNIST test digits; each out-of-distribution
set is a row: notMNIST, the Fashion-MNIST and Omniglot subsets, uniform and
Gaussian noise, horizontally and vertically flipped MNIST test digits, and
adversarial inputs (FGSM on one ensemble member's likelihood, started from
Gaussian noise, as the paper does). Each score is a column, behind the
Detector contract (higher = more out-of-distribution):

* ``D``: minus the critic of WGAN member 0; ``Var(D)``: the variance of the K critics;
* ``rate``: KL(q(z|x) || p(z)) of VAE member 0;
* ``log p``: minus VAE member 0's 16-sample importance-weighted log-likelihood bound;
* ``WAIC``: minus Eq. 1 over the K VAEs (and over the beta = 0.1 ensemble, when configured).

For every cell: AUROC, average precision and FPR at 95% TPR (positive class:
out-of-distribution). The report also holds score histograms per dataset
(the paper's Figure 1, right) and ArviZ's dataset-level WAIC and PSIS-LOO of
the VAE ensemble on every set, members treated as posterior draws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ppl_audit import diagnostics
from ppl_audit._device import resolve_device
from ppl_audit.audits.spec import DEFAULT_SEED, validate_seed
from ppl_audit.errors import InvalidInputError
from ppl_audit.metrics import ood_metrics, reference_percentiles
from ppl_audit.progress import ProgressFn, report
from ppl_audit.report import Report
from ppl_audit.training import load_model
from ppl_audit.validators import is_positive_int

KIND = "ood"
VAE_ENSEMBLE_KIND, GAN_ENSEMBLE_KIND = "vae-ensemble", "gan-ensemble"  # the card kinds the scores come from
DATASET_ROWS = ("omniglot", "notmnist", "fashion-mnist")  # real out-of-distribution image sets
TRANSFORM_ROWS = ("uniform-noise", "gaussian-noise", "hflip", "vflip")  # made from MNIST test digits
ADVERSARIAL = "adversarial"
FLIP_ROWS = ("hflip", "vflip")  # transform rows that keep the digit: split by its class in the report
ROWS = (*DATASET_ROWS, *TRANSFORM_ROWS, ADVERSARIAL)  # the paper's Table 2 order
ROW_TITLES = {"omniglot": "Omniglot", "notmnist": "notMNIST", "fashion-mnist": "Fashion-MNIST",
              "uniform-noise": "Uniform", "gaussian-noise": "Gaussian", "hflip": "HFlip", "vflip": "VFlip",
              ADVERSARIAL: "Adversarial"}
#: the best of the paper's MNIST columns per row (AUROC, %), Choi & Jang Table 2
PAPER_BEST_AUROC = {"omniglot": 100.0, "notmnist": 100.0, "fashion-mnist": 100.0, "uniform-noise": 100.0,
                    "gaussian-noise": 100.0, "hflip": 90.0, "vflip": 89.3, ADVERSARIAL: 100.0}
COLUMNS = ("D", "Var(D)", "rate", "log p", "WAIC")
BETA_COLUMN = "WAIC (beta = 0.1)"
COLUMN_MEANINGS = {
    "D": "-D_1(x): minus WGAN critic member 1 (the critic is higher for more MNIST-like images)",
    "Var(D)": "Var_k D_k(x) over the K critics",
    "rate": "KL(q_1(z|x) || p(z)) of VAE member 1",
    "log p": "-log p_1(x): VAE member 1's importance-weighted bound",
    "WAIC": "-WAIC(x) = -(E_k log p_k(x) - Var_k log p_k(x)) over the K VAEs (Eq. 1)",
    BETA_COLUMN: "-WAIC(x) over the K beta = 0.1 VAEs",
    "1 - max p": "1 - max_k p_k(x) of the given classifier (Hendrycks & Gimpel's baseline, complemented)",
}
TASK = "scoring OoD sets"  # progress task name
MISSED_IMAGES = 16  # per row: the OoD images its best column ranks as most in-distribution, shown and listed


@dataclass(frozen=True)
class OodAuditSpec:
    """What an OoD audit runs.

    Parameters
    ----------
    title : str
    vae_ensemble : str
        Card of the VAE ensemble (kind ``vae-ensemble``).
    beta_vae_ensemble : str, optional
        Card of a beta-VAE ensemble for an extra WAIC column ("" to skip).
    gan_ensemble : str, optional
        Card of the WGAN ensemble for the D and Var(D) columns ("" to skip).
    num_in : int, optional
        In-distribution MNIST test digits scored (all 10,000 when absent).
    num_out : int
        Images per out-of-distribution set (fewer where a set is smaller).
    rows : tuple of str
        Which out-of-distribution sets (``ROWS``).
    iwae_samples : int
        Importance samples of the log-likelihood bound (the issue's 16).
    adversarial_epsilon, adversarial_steps
        FGSM step size and number of steps, from Gaussian noise, on VAE member 1's likelihood.
    device : str
    data_dir : str, optional
    """

    title: str = "Generative-ensemble out-of-distribution detection on MNIST"
    vae_ensemble: str = "mnist-vae-ensemble"
    beta_vae_ensemble: str = "mnist-vae-ensemble-beta01"
    gan_ensemble: str = "mnist-gan-ensemble"
    num_in: int | None = None
    num_out: int = 2000
    rows: tuple[str, ...] = ROWS
    iwae_samples: int = 16
    adversarial_epsilon: float = 0.02
    adversarial_steps: int = 10
    device: str = "auto"
    data_dir: str | None = None

    def __post_init__(self):
        unknown = [r for r in self.rows if r not in ROWS]
        if not self.rows or unknown:
            raise InvalidInputError(f"rows must be a non-empty subset of {list(ROWS)}, got {list(self.rows)}")
        for name in ("num_out", "iwae_samples", "adversarial_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if self.num_in is not None and (not isinstance(self.num_in, int) or self.num_in <= 0):
            raise InvalidInputError(f"num_in must be a positive integer (or absent: all), got {self.num_in!r}")
        eps = self.adversarial_epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1:
            raise InvalidInputError(f"adversarial_epsilon must be a number in (0, 1], got {eps!r}")
        if not self.vae_ensemble:
            raise InvalidInputError("vae_ensemble must name a vae-ensemble card")


SPEC = OodAuditSpec  # the [audit] table's dataclass (audits.spec.spec_from_toml)


# --------------------------------------------------------------------------- scoring


class EnsembleScorer:
    """Every column's detector over loaded ensembles; scores a batch with each ensemble run once.

    Parameters
    ----------
    vae : nn.Module
        A VAE ensemble: ``log_likelihood(x, num_samples, generator, common_draws) -> (K, N)`` and
        ``rate(x) -> (K, N)``.
    beta_vae : nn.Module, optional
        A second VAE ensemble for the ``WAIC (beta = 0.1)`` column.
    gan : nn.Module, optional
        A WGAN ensemble: ``critic_scores(x) -> (K, N)``.
    iwae_samples : int
    seed : int
        Seeds the importance samples: one set per member, shared by every
        image (``common_draws``), so an image's score depends on the image
        alone, not on its batch or its place in it.
    """

    def __init__(self, vae, *, beta_vae=None, gan=None, iwae_samples: int = 16, seed: int = 0):
        from ppl_audit.detectors.ood import (
            CriticDetector,
            CriticVarianceDetector,
            LogLikelihoodDetector,
            RateDetector,
            WAICDetector,
        )

        self.iwae_samples, self.seed = iwae_samples, seed

        def loglik_of(model):
            return lambda x: model.log_likelihood(x, num_samples=iwae_samples, common_draws=True,
                                                  generator=torch.Generator().manual_seed(seed))

        vae_loglik = loglik_of(vae)
        self.vae_log_likelihood = vae_loglik
        self.detectors = {}
        if gan is not None:
            self.detectors["D"] = CriticDetector(gan.critic_scores)  # score_all runs the critics once for both
            self.detectors["Var(D)"] = CriticVarianceDetector(gan.critic_scores)
        self.detectors["rate"] = RateDetector(vae.rate)
        self.detectors["log p"] = LogLikelihoodDetector(vae_loglik)
        self.detectors["WAIC"] = WAICDetector(vae_loglik)
        if beta_vae is not None:
            self.detectors[BETA_COLUMN] = WAICDetector(loglik_of(beta_vae))

    @property
    def columns(self) -> tuple[str, ...]:
        """The score names, in table order."""
        return tuple(self.detectors)

    def score(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``({column: (N,) scores}, (K, N) VAE log-likelihoods)`` of a batch.

        Each ensemble runs once per batch: columns built on the same callable
        (log p and WAIC on the VAEs' log-likelihoods, D and Var(D) on the
        critics) share its checked output.
        """
        from ppl_audit.detectors.ood import memo_key, score_all

        outputs: dict = {}
        scores = score_all(x, self.detectors, outputs=outputs)
        log_lik = outputs[memo_key(self.vae_log_likelihood)]
        return {k: v.cpu() for k, v in scores.items()}, log_lik.cpu()


def out_of_distribution_sets(rows, mnist_test: torch.Tensor, *, num_out: int, data_dir, generator,
                             adversarial=None) -> dict[str, torch.Tensor]:
    """The images of each out-of-distribution row, at most ``num_out`` each.

    Real sets are read from the data folder; noise and flips are made from
    the first ``num_out`` MNIST test digits; ``adversarial(num_out)`` makes
    the adversarial row.
    """
    from ppl_audit.data import apply_transform, load_dataset

    sets = {}
    base = mnist_test[:num_out]
    for row in rows:
        if row in DATASET_ROWS:
            sets[row] = load_dataset(row, data_dir=data_dir, limit=num_out).images
        elif row in TRANSFORM_ROWS:
            sets[row] = apply_transform(row, base, generator=generator)
        elif row == ADVERSARIAL:
            if adversarial is None:
                raise InvalidInputError("the adversarial row needs an adversarial image maker")
            sets[row] = adversarial(num_out)
    return sets


def _percent(value: float) -> float:
    return round(100.0 * value, 2)


def auroc_by_class(scores_in: torch.Tensor, scores_out: torch.Tensor, labels: torch.Tensor,
                   num_classes: int = 10) -> list[dict[str, Any]]:
    """Split an OoD row made from labelled digits by the class of the digit each image was made from.

    For each class ``c``: the AUROC of the row's images made from class-``c``
    digits against every in-distribution input, and the row's AUROC with
    them left out (``None`` where the class has no image, or is the only one).

    Parameters
    ----------
    scores_in, scores_out : torch.Tensor
        ``(N_in,)`` and ``(N_out,)`` scores, higher = more out-of-distribution.
    labels : torch.Tensor
        ``(N_out,)`` class of the digit each OoD image was made from.
    num_classes : int

    Returns
    -------
    list of dict
        One per class: ``class``, ``num_images``, ``auroc``, ``auroc_without`` (floats in [0, 1] or None).

    Examples
    --------
    >>> rows = auroc_by_class(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([10.0, 11.0, -1.0]),
    ...                       torch.tensor([0, 0, 1]), num_classes=3)
    >>> [(r["class"], r["num_images"], r["auroc"], r["auroc_without"]) for r in rows]
    [(0, 2, 1.0, 0.0), (1, 1, 0.0, 1.0), (2, 0, None, None)]
    """
    if labels.shape != scores_out.shape:
        raise InvalidInputError(f"labels must have the OoD scores' shape {tuple(scores_out.shape)}, got "
                                f"{tuple(labels.shape)}")
    labels = labels.to(scores_out.device)
    rows = []
    for c in range(num_classes):
        mine = labels == c
        n = int(mine.sum())
        rows.append({
            "class": c, "num_images": n,
            "auroc": ood_metrics(scores_in, scores_out[mine])["auroc"] if n else None,
            "auroc_without": ood_metrics(scores_in, scores_out[~mine])["auroc"] if 0 < n < len(labels) else None,
        })
    return rows


def least_flagged(scores_in: torch.Tensor, scores_out: torch.Tensor, k: int = MISSED_IMAGES) -> list[dict[str, Any]]:
    """The ``k`` out-of-distribution inputs a score ranks as most in-distribution, with their percentiles.

    An input's percentile is the share of in-distribution inputs scoring
    lower, ties counted half (:func:`ppl_audit.metrics.reference_percentiles`):
    the mean over a row is the row's AUROC, so these are the inputs that
    pull it down.

    Parameters
    ----------
    scores_in, scores_out : torch.Tensor
        ``(N_in,)`` and ``(N_out,)`` scores, higher = more out-of-distribution.
    k : int
        How many to return (fewer when the row is smaller).

    Returns
    -------
    list of dict
        ``index`` (position in ``scores_out``) and ``percentile`` (in [0, 1]),
        lowest score first; equal scores keep their order.

    Examples
    --------
    >>> least_flagged(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([9.0, 1.5, -1.0]), k=2)
    [{'index': 2, 'percentile': 0.0}, {'index': 1, 'percentile': 0.5}]
    """
    if not is_positive_int(k):
        raise InvalidInputError(f"k must be an integer >= 1, got {k!r}")
    percentiles = reference_percentiles(scores_in, scores_out)
    return [{"index": i, "percentile": round(float(percentiles[i]), 6)} for i in _lowest_first(scores_out, k)]


def _lowest_first(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` lowest scores (the most in-distribution), lowest first; equal scores keep their order."""
    return torch.sort(scores.detach().cpu().double(), stable=True).indices[:k].tolist()


def _missed(scored, rows, rows_json, mnist_labels, labelled_rows) -> dict[str, dict[str, Any]]:
    """``least_flagged`` of every row's best column; ``labelled_rows`` (made from the digits) add each one's class."""
    missed = {}
    for row in rows:
        column = rows_json[row]["best_column"]
        images = least_flagged(scored["mnist"][column], scored[row][column])
        if row in labelled_rows:
            for entry in images:
                entry["class"] = int(mnist_labels[entry["index"]])
        missed[row] = {"column": column, "images": images}
    return missed


def _flips_by_class(scored, row: str, column: str, mnist_labels: torch.Tensor) -> dict[str, Any]:
    """``auroc_by_class`` of one flip row's ``column``, the row made from the first MNIST test digits."""
    out = scored[row][column]
    rows = auroc_by_class(scored["mnist"][column], out, mnist_labels[:len(out)])
    return {"column": column, "classes": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                                          for r in rows]}


# --------------------------------------------------------------------------- the audit's numbers


@dataclass(frozen=True)
class OodResults:
    """What an OoD audit measured, before any table or figure is drawn (:func:`evaluate`).

    Attributes
    ----------
    spec : OodAuditSpec
    seed : int
    device : str
        The device type the images were scored on (``"cpu"``, ``"cuda"``).
    columns : tuple of str
        The score names, in table order (:attr:`EnsembleScorer.columns`).
    images : dict of str to torch.Tensor
        ``{"mnist": in-distribution digits, ROW: that row's images, ...}``, in-distribution first, then
        ``spec.rows`` in order.
    scores : dict of str to dict of str to torch.Tensor
        ``scores[group][column]``: ``(N,)`` scores on the CPU, higher = more out-of-distribution.
    metrics : dict
        ``metrics[row][column]``: :func:`ppl_audit.metrics.ood_metrics` of the row against MNIST, unrounded.
    rows : dict
        Per row: ``num_images``, ``best_column``, ``best_auroc_percent``, ``paper_best_auroc_percent``,
        ``at_or_above_paper`` and every column's metrics rounded to 6 decimals (``report.json``'s ``rows``).
    information_criteria : dict
        Per group: the scalar entries of :func:`ppl_audit.diagnostics.ensemble_waic_loo` of the VAE ensemble.
    flips_by_class : dict
        Per flip row made here from labelled digits: :func:`auroc_by_class` of its best column, rounded
        (empty without labels).
    least_flagged : dict
        Per row: its best ``column`` and the :func:`least_flagged` ``images`` (with their digit's ``class``
        where the row was made from labelled digits).
    models : dict
        Card name, recipe hash and scalar training metrics of each loaded ensemble (empty when modules were given).
    timings : dict
        Seconds per stage.
    started : float
        ``time.perf_counter()`` when the audit began, so that the report's ``total_seconds`` counts rendering too.
    """

    spec: OodAuditSpec
    seed: int
    device: str
    columns: tuple[str, ...]
    images: dict[str, torch.Tensor]
    scores: dict[str, dict[str, torch.Tensor]]
    metrics: dict[str, dict[str, dict[str, Any]]]
    rows: dict[str, dict[str, Any]]
    information_criteria: dict[str, dict[str, Any]]
    flips_by_class: dict[str, dict[str, Any]]
    least_flagged: dict[str, dict[str, Any]]
    models: dict[str, dict[str, Any]]
    timings: dict[str, float]
    started: float

    @property
    def num_in(self) -> int:
        """How many in-distribution MNIST test digits were scored."""
        return int(len(self.images["mnist"]))


def _load_ensembles(spec: OodAuditSpec, **loading) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(modules, cards)`` of the spec's ensembles, trained or read from the cache (``loading``: cache, ...)."""
    trained = {"vae": load_model(spec.vae_ensemble, kind=VAE_ENSEMBLE_KIND, **loading)}
    if spec.beta_vae_ensemble:
        trained["beta_vae"] = load_model(spec.beta_vae_ensemble, kind=VAE_ENSEMBLE_KIND, **loading)
    if spec.gan_ensemble:
        trained["gan"] = load_model(spec.gan_ensemble, kind=GAN_ENSEMBLE_KIND, **loading)
    cards = {k: {"card": t.card.name, "recipe_hash": t.card.recipe_hash,
                 **{m: v for m, v in t.metrics.items() if isinstance(v, (int, float)) and "seconds" not in m}}
             for k, t in trained.items()}
    return {k: t.module for k, t in trained.items()}, cards


def _adversarial_maker(vae, spec: OodAuditSpec, seed: int, device) -> Callable[[int], torch.Tensor]:
    """``n -> n`` FGSM images from Gaussian noise on VAE member 1's likelihood bound (the adversarial row)."""
    from ppl_audit.adversarial import fgsm_from_noise

    def adversarial(n: int) -> torch.Tensor:
        member = lambda x: vae.log_likelihood(x, num_samples=spec.iwae_samples, common_draws=True,  # noqa: E731
                                              generator=torch.Generator().manual_seed(seed))[0]
        return fgsm_from_noise(member, n, epsilon=spec.adversarial_epsilon, steps=spec.adversarial_steps,
                               generator=torch.Generator().manual_seed(seed * 1000 + 2), device=device)

    return adversarial


def _score_groups(scorer: EnsembleScorer, groups: dict[str, torch.Tensor], progress: ProgressFn | None):
    """``(scores, log_liks)``: every group's column scores and ``(K, N)`` VAE log-likelihoods, in order."""
    scored: dict[str, dict[str, torch.Tensor]] = {}
    log_liks: dict[str, torch.Tensor] = {}
    for i, (name, x) in enumerate(groups.items()):
        scored[name], log_liks[name] = scorer.score(x)
        report(progress, TASK, i + 1, len(groups))
    return scored, log_liks


def _row_summary(row: str, metrics: dict[str, dict[str, Any]], columns, num_images: int) -> dict[str, Any]:
    """``report.json``'s entry of one row: its best column against the paper's, and every column's metrics."""
    best_column = max(columns, key=lambda c: metrics[c]["auroc"])
    best = _percent(metrics[best_column]["auroc"])
    return {"num_images": int(num_images), "best_column": best_column, "best_auroc_percent": best,
            "paper_best_auroc_percent": PAPER_BEST_AUROC[row], "at_or_above_paper": best >= PAPER_BEST_AUROC[row],
            "columns": {c: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics[c].items()
                            if k not in ("positive_class", "score_sign")} for c in columns}}


def evaluate(
    spec: OodAuditSpec,
    *,
    seed: int = DEFAULT_SEED,
    progress: ProgressFn | None = None,
    cache: str | None = None,
    data_dir: str | None = None,
    models: dict[str, Any] | None = None,
    images: dict[str, torch.Tensor] | None = None,
) -> OodResults:
    """Score MNIST and every out-of-distribution row with every column; nothing is drawn (see :func:`present`).

    Parameters are those of :func:`run`.

    Returns
    -------
    OodResults

    Examples
    --------
    >>> results = evaluate(OodAuditSpec(num_out=500), data_dir="/path/to/data")  # doctest: +SKIP
    >>> results.rows["vflip"]["best_auroc_percent"]  # doctest: +SKIP
    """
    from ppl_audit.data import load_dataset

    seed = validate_seed(seed)
    start = time.perf_counter()
    device = resolve_device(spec.device)
    data_dir = data_dir if data_dir is not None else spec.data_dir
    timings: dict[str, float] = {}
    cards = {}
    if models is None:
        models, cards = _load_ensembles(spec, cache=cache, data_dir=data_dir, device=device, progress=progress)
    timings["models_seconds"] = time.perf_counter() - start
    scorer = EnsembleScorer(models["vae"], beta_vae=models.get("beta_vae"), gan=models.get("gan"),
                            iwae_samples=spec.iwae_samples, seed=seed)
    images = dict(images or {})
    mnist, mnist_labels = images.pop("mnist", None), images.pop("mnist_labels", None)
    if mnist is None:
        test = load_dataset("mnist", "test", data_dir=data_dir, limit=spec.num_in)
        mnist, mnist_labels = test.images, test.labels
    mnist = mnist.to(device)
    t0 = time.perf_counter()
    missing = [r for r in spec.rows if r not in images]
    images.update(out_of_distribution_sets(missing, mnist, num_out=spec.num_out, data_dir=data_dir,
                                           generator=torch.Generator().manual_seed(seed * 1000 + 1),
                                           adversarial=_adversarial_maker(models["vae"], spec, seed, device)))
    timings["ood_sets_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    groups = {"mnist": mnist, **{r: images[r].to(device) for r in spec.rows}}
    scored, log_liks = _score_groups(scorer, groups, progress)
    timings["scoring_seconds"] = time.perf_counter() - t0
    columns = scorer.columns
    metrics = {row: {c: ood_metrics(scored["mnist"][c], scored[row][c]) for c in columns} for row in spec.rows}
    rows = {row: _row_summary(row, metrics[row], columns, len(groups[row])) for row in spec.rows}
    flip_rows = [r for r in FLIP_ROWS if r in missing] if mnist_labels is not None else []
    return OodResults(
        spec=spec, seed=seed, device=device.type, columns=columns, images=groups, scores=scored, metrics=metrics,
        rows=rows,
        information_criteria={name: {k: v for k, v in diagnostics.ensemble_waic_loo(ll.double().numpy()).items()
                                     if not isinstance(v, list)} for name, ll in log_liks.items()},
        flips_by_class={row: _flips_by_class(scored, row, rows[row]["best_column"], mnist_labels)
                        for row in flip_rows},
        least_flagged=_missed(scored, spec.rows, rows, mnist_labels, flip_rows),
        models=cards, timings=timings, started=start,
    )


def present(results: OodResults) -> Report:
    """The OoD audit's :class:`~ppl_audit.report.Report` from its numbers: tables, figures, sections, warnings.

    Rendering lives in :mod:`ppl_audit.audits.ood_report`; it uses no randomness, so the same results give
    the same report.

    Examples
    --------
    >>> report = present(evaluate(OodAuditSpec(num_out=500), data_dir="/path/to/data"))  # doctest: +SKIP
    """
    from ppl_audit.audits import ood_report  # here, not at the top: ood_report imports this module

    return ood_report.present(results)


def run(
    spec: OodAuditSpec,
    *,
    seed: int = DEFAULT_SEED,
    progress: ProgressFn | None = None,
    cache: str | None = None,
    data_dir: str | None = None,
    models: dict[str, Any] | None = None,
    images: dict[str, torch.Tensor] | None = None,
) -> Report:
    """Run the OoD audit and return its :class:`~ppl_audit.report.Report`: ``present(evaluate(...))``.

    Parameters
    ----------
    spec : OodAuditSpec
    seed : int
    progress : callable, optional
    cache : str, optional
    data_dir : str, optional
        Wins over ``spec.data_dir``.
    models : dict, optional
        ``{"vae": module, "beta_vae": module or None, "gan": module or None}``
        to use instead of loading the spec's cards (tests use tiny ones).
    images : dict, optional
        ``{"mnist": (N, 1, 28, 28), ROW: images, ...}`` instead of reading the
        data folder; rows absent here are made or read as usual. With
        ``"mnist_labels"`` (``(N,)``) too, the flip rows made here are also
        split by the class of the mirrored digit, as when the digits are read.

    Examples
    --------
    >>> report = run(OodAuditSpec(num_out=500), data_dir="/path/to/data")  # doctest: +SKIP
    """
    return present(evaluate(spec, seed=seed, progress=progress, cache=cache, data_dir=data_dir, models=models,
                            images=images))


# --------------------------------------------------------------------------- scoring a folder

DEFAULT_REFERENCE = 2000  # MNIST test digits scored as the reference distribution of `ppl-audit ood`
FOLDER_GALLERY_COLUMN = "WAIC"  # the score whose most MNIST-like images the folder report shows
CLASSIFIER_COLUMN = "1 - max p"  # a given classifier's score (COLUMN_MEANINGS)
FOLDER_IMAGE_SHAPE = (1, 28, 28)  # what load_image_folder reads
FOLDER_CLASSIFIER_KINDS = ("lenet-classifier", "bayesian-lenet-classifier", "sdim-classifier")  # 28 x 28 grey


@dataclass(frozen=True)
class FolderResults:
    """The scores of a folder of images (:func:`evaluate_folder`), before any table or figure is drawn.

    Attributes
    ----------
    folder : str
    names : list of str
        Each image's file (and row, for arrays), in scoring order.
    images : torch.Tensor
        ``(N, 1, 28, 28)``, as read.
    columns : tuple of str
    scores : dict of str to torch.Tensor
        ``(N,)`` per column, higher = more out-of-distribution.
    reference : dict of str to torch.Tensor or None
        The MNIST reference digits' scores per column (None when none were scored).
    reference_note : str
        Why there is no reference, where one was asked for and could not be read ("" otherwise).
    percentiles : dict of str to list of float
        Per column, each image's share of reference digits scoring lower (empty without a reference).
    per_image : list of dict
        ``report.json``'s ``images``: each image's name, scores and percentiles, rounded to 4 decimals.
    summary : dict
        Per column: mean, min and max score, and against the reference its 99th percentile and the share
        of images above it.
    most_mnist_like : list of int
        The images ``FOLDER_GALLERY_COLUMN`` ranks as most in-distribution, lowest score first.
    options : dict
        The folder and the options it was scored with (the report's ``spec``).
    seed : int
    device : str
    models : dict
        Card name and recipe hash of each loaded ensemble (empty when modules were given).
    started : float
        ``time.perf_counter()`` when scoring began.
    """

    folder: str
    names: list[str]
    images: torch.Tensor
    columns: tuple[str, ...]
    scores: dict[str, torch.Tensor]
    reference: dict[str, torch.Tensor] | None
    reference_note: str
    percentiles: dict[str, list[float]]
    per_image: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    most_mnist_like: list[int]
    options: dict[str, Any]
    seed: int
    device: str
    models: dict[str, dict[str, Any]]
    started: float


def _load_folder_ensembles(vae_ensemble: str, gan_ensemble: str, **loading):
    """``(modules, cards)`` of the VAE ensemble and, when named, the WGAN ensemble."""
    trained = {"vae": load_model(vae_ensemble, kind=VAE_ENSEMBLE_KIND, **loading)}
    if gan_ensemble:
        trained["gan"] = load_model(gan_ensemble, kind=GAN_ENSEMBLE_KIND, **loading)
    cards = {k: {"card": t.card.name, "recipe_hash": t.card.recipe_hash} for k, t in trained.items()}
    return {k: t.module for k, t in trained.items()}, cards


def _load_folder_classifier(classifier: str, resize: bool, options: dict[str, Any], **loading):
    """``(classifier, card)``: a model card's classifier, or a user's model file or entry point, that can take
    the folder's 28 x 28 grey images (``resize`` adapts them to a user's model)."""
    from ppl_audit.classifiers.external import check_input_compatible, is_model_source, load_classifier_file

    if is_model_source(classifier):
        options = {k: v for k, v in options.items() if v is not None}
        model = load_classifier_file(classifier, resize=resize, device=loading["device"], **options)
        card = {"file": classifier}
    elif resize or any(v not in (None, "auto") for v in options.values()):
        raise InvalidInputError("resize, input_shape, output and weights apply to a classifier of your own (.onnx, "
                                f".pt2 or package.module:factory), not to model card {classifier!r}")
    else:
        trained = load_model(classifier, kind=FOLDER_CLASSIFIER_KINDS, **loading)
        model, card = trained.model, {"card": trained.card.name, "recipe_hash": trained.card.recipe_hash}
    check_input_compatible(FOLDER_IMAGE_SHAPE, model, what="the folder's images")
    return model, card


def _scores_with_classifier(scorer: EnsembleScorer, classifier, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every ensemble column's scores, and the classifier's ``1 - max p`` when one is given."""
    from ppl_audit.detectors.baselines import MaxSoftmaxDetector

    scores = dict(scorer.score(images)[0])
    if classifier is not None:
        with torch.no_grad():
            scores[CLASSIFIER_COLUMN] = MaxSoftmaxDetector(classifier).score(images).to(images.device)
    return scores


def _reference_scores(scorer: EnsembleScorer, num_reference: int, data_dir, device, classifier=None):
    """``(scores, note)`` of the first ``num_reference`` MNIST test digits; ``(None, why)`` where none can be read."""
    from ppl_audit.data import DataNotFoundError, load_dataset

    if not num_reference:
        return None, ""
    try:
        ref_images = load_dataset("mnist", "test", data_dir=data_dir, limit=num_reference).images
        return _scores_with_classifier(scorer, classifier, ref_images.to(device)), ""
    except DataNotFoundError as exc:
        return None, f"No MNIST reference was scored ({exc}); percentiles are absent."


def _per_image(names, scores, percentiles, columns) -> list[dict[str, Any]]:
    """One entry per image: its name, then each column's score and (with a reference) percentile."""
    values = {c: scores[c].detach().cpu().double().numpy().round(4).tolist() for c in columns}
    per_image = []
    for i, name in enumerate(names):  # only dict building: scores and percentiles are computed batched
        entry: dict[str, Any] = {"image": name}
        for c in columns:
            entry[c] = values[c][i]
            if percentiles:
                entry[f"{c} percentile"] = percentiles[c][i]
        per_image.append(entry)
    return per_image


def _folder_summary(scores, reference, columns) -> dict[str, dict[str, float]]:
    """Per column: mean, min and max score; against a reference, its 99th percentile and the share above it."""
    summary = {c: {"mean": round(float(scores[c].mean()), 4), "min": round(float(scores[c].min()), 4),
                   "max": round(float(scores[c].max()), 4)} for c in columns}
    if reference is not None:
        for c in columns:
            summary[c]["reference_99th_percentile"] = round(float(reference[c].quantile(0.99)), 4)
            summary[c]["share_above_reference_99th"] = round(
                float((scores[c] > reference[c].quantile(0.99)).double().mean()), 4)
    return summary


def evaluate_folder(
    folder,
    *,
    vae_ensemble: str = "mnist-vae-ensemble",
    gan_ensemble: str = "",
    num_reference: int = DEFAULT_REFERENCE,
    iwae_samples: int = 16,
    seed: int = DEFAULT_SEED,
    device="auto",
    cache: str | None = None,
    data_dir: str | None = None,
    progress: ProgressFn | None = None,
    models: dict[str, Any] | None = None,
    classifier: str = "",
    resize: bool = False,
    classifier_options: dict[str, Any] | None = None,
) -> FolderResults:
    """Score every image of a folder, and MNIST reference digits, with every column; nothing is drawn.

    Parameters and errors are those of :func:`score_folder`; :func:`present_folder` renders the result.

    Returns
    -------
    FolderResults

    Examples
    --------
    >>> results = evaluate_folder("my-digits/", data_dir="/path/to/data")  # doctest: +SKIP
    >>> results.per_image[0]["WAIC percentile"]  # doctest: +SKIP
    """
    from ppl_audit.data import load_image_folder

    seed = validate_seed(seed)
    if not isinstance(num_reference, int) or num_reference < 0:
        raise InvalidInputError(f"num_reference must be an integer >= 0, got {num_reference!r}")
    start = time.perf_counter()
    device = resolve_device(device)
    images, names = load_image_folder(folder)  # fails fast, before any model is loaded
    cards = {}
    loading = dict(cache=cache, data_dir=data_dir, device=device, progress=progress)
    model = None
    if classifier:
        model, cards["classifier"] = _load_folder_classifier(classifier, resize, classifier_options or {}, **loading)
    if models is None:
        models, ensemble_cards = _load_folder_ensembles(vae_ensemble, gan_ensemble, **loading)
        cards.update(ensemble_cards)
    scorer = EnsembleScorer(models["vae"], gan=models.get("gan"), iwae_samples=iwae_samples, seed=seed)
    scores = _scores_with_classifier(scorer, model, images.to(device))
    reference, reference_note = _reference_scores(scorer, num_reference, data_dir, device, model)
    columns = (*scorer.columns, *([CLASSIFIER_COLUMN] if model is not None else []))
    percentiles = ({c: reference_percentiles(reference[c], scores[c]).round(4).tolist() for c in columns}
                   if reference is not None else {})
    return FolderResults(
        folder=str(folder), names=names, images=images, columns=columns, scores=scores, reference=reference,
        reference_note=reference_note, percentiles=percentiles,
        per_image=_per_image(names, scores, percentiles, columns), summary=_folder_summary(scores, reference, columns),
        most_mnist_like=_lowest_first(scores[FOLDER_GALLERY_COLUMN], MISSED_IMAGES),
        options={"folder": str(folder), "vae_ensemble": vae_ensemble, "gan_ensemble": gan_ensemble,
                 "num_reference": num_reference, "iwae_samples": iwae_samples,
                 **({"classifier": classifier, "resize": resize} if classifier else {})},
        seed=seed, device=device.type, models=cards, started=start,
    )


def present_folder(results: FolderResults) -> Report:
    """The report of a scored folder: the per-image table, score histograms and the most MNIST-like images.

    Examples
    --------
    >>> report = present_folder(evaluate_folder("my-digits/", data_dir="/path/to/data"))  # doctest: +SKIP
    """
    from ppl_audit.audits import ood_report  # here, not at the top: ood_report imports this module

    return ood_report.present_folder(results)


def score_folder(
    folder,
    *,
    vae_ensemble: str = "mnist-vae-ensemble",
    gan_ensemble: str = "",
    num_reference: int = DEFAULT_REFERENCE,
    iwae_samples: int = 16,
    seed: int = DEFAULT_SEED,
    device="auto",
    cache: str | None = None,
    data_dir: str | None = None,
    progress: ProgressFn | None = None,
    models: dict[str, Any] | None = None,
    classifier: str = "",
    resize: bool = False,
    classifier_options: dict[str, Any] | None = None,
) -> Report:
    """Score every image of a folder against trained ensembles (``ppl-audit ood``).

    Each image gets every column's score (higher = more out-of-distribution)
    and, when MNIST test digits can be read as a reference, the share of
    reference digits scoring lower (the image's percentile: 0.99 means it
    looks less like MNIST than 99% of MNIST's own test digits).
    ``present_folder(evaluate_folder(...))``.

    Parameters
    ----------
    folder : path-like
        PNG/JPEG files or ``.npy``/``.npz`` arrays of 28 x 28 grey images
        (:func:`ppl_audit.data.load_image_folder`).
    vae_ensemble, gan_ensemble : str
        Cards (``gan_ensemble=""``: no critic columns).
    num_reference : int
        MNIST test digits scored as the reference (0: none).
    iwae_samples, seed, device, cache, data_dir, progress
        As :func:`run`.
    models : dict, optional
        ``{"vae": module, "gan": module or None}`` instead of loading the cards.
    classifier : str
        A classifier's model card, or a classifier of your own (``.onnx``, ``.pt2``,
        ``package.module:factory``): adds the column ``1 - max p`` (``""``: none).
    resize : bool
        Adapt the 28 x 28 grey images to a classifier of your own that takes another shape.
    classifier_options : dict, optional
        For a classifier of your own: ``input_shape``, ``output`` and ``weights``, as
        :func:`~ppl_audit.classifiers.external.load_classifier_file` takes them.

    Raises
    ------
    ppl_audit.data.DataNotFoundError
        The folder is missing or holds no image.
    ppl_audit.data.DataFileError
        A file cannot be read or has the wrong size.
    """
    return present_folder(evaluate_folder(
        folder, vae_ensemble=vae_ensemble, gan_ensemble=gan_ensemble, num_reference=num_reference,
        iwae_samples=iwae_samples, seed=seed, device=device, cache=cache, data_dir=data_dir, progress=progress,
        models=models, classifier=classifier, resize=resize, classifier_options=classifier_options))


__all__ = ["SPEC", "EnsembleScorer", "FolderResults", "KIND", "OodAuditSpec", "OodResults", "PAPER_BEST_AUROC", "ROWS",
           "auroc_by_class", "evaluate", "evaluate_folder", "least_flagged", "out_of_distribution_sets", "present",
           "present_folder", "run", "score_folder"]
