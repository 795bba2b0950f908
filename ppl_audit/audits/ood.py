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

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from ppl_audit import diagnostics
from ppl_audit._device import resolve_device
from ppl_audit.audits.spec import DEFAULT_SEED, check_keys, dataclass_kwargs, spec_hash, validate_seed
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.metrics import OOD_POSITIVE_CLASS, OOD_SCORE_SIGN, ood_metrics, reference_percentiles
from ppl_audit.provenance import library_versions
from ppl_audit.progress import ProgressFn, report
from ppl_audit.report import Report, Section, Table
from ppl_audit.report import figures
from ppl_audit.validators import is_positive_int

KIND = "ood"
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


def spec_from_toml(doc: dict[str, Any], source: str) -> tuple[OodAuditSpec, int]:
    """Build ``(spec, seed)`` from a parsed audit file of kind ``ood``."""
    check_keys(doc, {"audit"}, source)
    audit = dict(doc.get("audit", {}))
    audit.pop("kind", None)
    try:
        seed = validate_seed(audit.pop("seed", DEFAULT_SEED))
        return OodAuditSpec(**dataclass_kwargs(OodAuditSpec, audit, f"{source} [audit]")), seed
    except (InvalidInputError, TypeError) as exc:
        if isinstance(exc, AuditFileError):
            raise
        raise AuditFileError(f"{source}: {exc}") from exc


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


def _short_percentile(p: float) -> str:
    """Two decimals, or four where two would round a percentile below 1 up to 1.00."""
    return f"{p:.2f}" if p < 0.995 or p == 1 else f"{p:.4f}"


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


def _missed_section(missed: dict[str, dict[str, Any]], images: dict[str, torch.Tensor], num_in: int) -> Section:
    """Image grids of each row's least-flagged inputs, for the rows where one scores at or below a test digit."""
    grids = []
    for row, entry in missed.items():
        if entry["images"][0]["percentile"] >= 1.0:
            continue  # every image of the row scores above every test digit: nothing is missed
        shown = entry["images"]
        labelled = "class" in shown[0]
        labels = [(f"digit {e['class']}" if labelled else f"#{e['index']}") + f": {_short_percentile(e['percentile'])}"
                  for e in shown]
        grids.append(figures.image_grid(
            f"missed_{row.replace('-', '_')}", f"{ROW_TITLES[row]}: the {len(shown)} images {entry['column']} "
            "ranks as most MNIST-like",
            f"Lowest {entry['column']} score first; each label gives the image's percentile among the {num_in} "
            "MNIST test digits" + (" and the class of the mirrored digit." if labelled else
                                   " and its position in the row."),
            images[row][[e["index"] for e in shown]].cpu(), labels,
            data={"row": row, "column": entry["column"], "images": shown}))
    return Section(
        "missed", "The out-of-distribution inputs each row's best score misses",
        paragraphs=["For each row, the images its best column ranks as most MNIST-like, each with its percentile: "
                    "the share of MNIST test digits scoring lower, ties counted half. 0.10 means 90% of the test "
                    "digits look more out-of-distribution than the image. A row's AUROC is the mean of these "
                    "percentiles over all its images, so these are the images that pull it down. Rows in which "
                    "every image scores above every test digit have no grid."
                    + ("" if grids else " Here that is every row.")],
        figures=grids,
    )


def _metric_table(name: str, title: str, key: str, results, columns, rows, paper=False) -> Table:
    header = ["dataset", *columns, "best"] + (["paper best"] if paper else [])
    body = []
    for row in rows:
        values = [_percent(results[row][c][key]) for c in columns]
        best = (max if key != "fpr_at_95_tpr" else min)(values)
        body.append([ROW_TITLES[row], *values, best] + ([PAPER_BEST_AUROC[row]] if paper else []))
    return Table(name, title, header, body)


def _flips_by_class(scored, row: str, column: str, mnist_labels: torch.Tensor) -> dict[str, Any]:
    """``auroc_by_class`` of one flip row's ``column``, the row made from the first MNIST test digits."""
    out = scored[row][column]
    rows = auroc_by_class(scored["mnist"][column], out, mnist_labels[:len(out)])
    return {"column": column, "classes": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                                          for r in rows]}


def _flips_section(by_class: dict[str, dict[str, Any]]) -> Section:
    """The report section splitting the flip rows by the mirrored digit's class."""
    header, body, warnings = ["class"], [], []
    for row, split in by_class.items():
        header += [f"{ROW_TITLES[row]}: digits", f"{ROW_TITLES[row]}: AUROC ({split['column']})",
                   f"{ROW_TITLES[row]}: row without the class"]
    for c in range(len(next(iter(by_class.values()))["classes"])):
        cells = [c]
        for split in by_class.values():
            r = split["classes"][c]
            cells += [r["num_images"], None if r["auroc"] is None else _percent(r["auroc"]),
                      None if r["auroc_without"] is None else _percent(r["auroc_without"])]
        body.append(cells)
    for row, split in by_class.items():
        for r in split["classes"]:
            if r["auroc"] is not None and r["auroc"] < 0.5:
                warnings.append(f"{ROW_TITLES[row]}: mirrored {r['class']}s score as more MNIST-like than the MNIST "
                                f"test digits under {split['column']} (AUROC {_percent(r['auroc'])}%)")
    return Section(
        "flips_by_class", "Flipped digits by class: where the flip rows lose",
        paragraphs=["Each flip row's best column, split by the class of the digit that was mirrored: the AUROC "
                    "of that class's mirrored digits against all MNIST test digits, and the row's AUROC with "
                    "them left out. Below 50% the score ranks those mirror images as more digit-like than the "
                    "test digits themselves; a likelihood does this for simple, thin shapes such as 1s."],
        tables=[Table("flips_by_class", "AUROC (%) of the flip rows by the mirrored digit's class", header, body)],
        warnings=warnings,
    )


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
    """Run the OoD audit and return its :class:`~ppl_audit.report.Report`.

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
    from ppl_audit.adversarial import fgsm_from_noise
    from ppl_audit.data import load_dataset

    seed = validate_seed(seed)
    start = time.perf_counter()
    device = resolve_device(spec.device)
    data_dir = data_dir if data_dir is not None else spec.data_dir
    timings: dict[str, float] = {}
    cards = {}
    if models is None:
        from ppl_audit.generative.gan_ensemble import load_gan_ensemble
        from ppl_audit.generative.vae_ensemble import load_vae_ensemble

        loading = dict(cache=cache, data_dir=data_dir, device=device, progress=progress)
        trained = {"vae": load_vae_ensemble(spec.vae_ensemble, **loading)}
        if spec.beta_vae_ensemble:
            trained["beta_vae"] = load_vae_ensemble(spec.beta_vae_ensemble, **loading)
        if spec.gan_ensemble:
            trained["gan"] = load_gan_ensemble(spec.gan_ensemble, **loading)
        models = {k: t.module for k, t in trained.items()}
        cards = {k: {"card": t.card.name, "recipe_hash": t.card.recipe_hash,
                     **{m: v for m, v in t.metrics.items() if isinstance(v, (int, float)) and "seconds" not in m}}
                 for k, t in trained.items()}
    timings["models_seconds"] = time.perf_counter() - start
    vae = models["vae"]
    scorer = EnsembleScorer(vae, beta_vae=models.get("beta_vae"), gan=models.get("gan"),
                            iwae_samples=spec.iwae_samples, seed=seed)
    images = dict(images or {})
    mnist, mnist_labels = images.pop("mnist", None), images.pop("mnist_labels", None)
    if mnist is None:
        test = load_dataset("mnist", "test", data_dir=data_dir, limit=spec.num_in)
        mnist, mnist_labels = test.images, test.labels
    mnist = mnist.to(device)
    generator = torch.Generator().manual_seed(seed * 1000 + 1)

    def adversarial(n: int) -> torch.Tensor:
        member = lambda x: vae.log_likelihood(x, num_samples=spec.iwae_samples, common_draws=True,  # noqa: E731
                                              generator=torch.Generator().manual_seed(seed))[0]
        return fgsm_from_noise(member, n, epsilon=spec.adversarial_epsilon, steps=spec.adversarial_steps,
                               generator=torch.Generator().manual_seed(seed * 1000 + 2), device=device)

    t0 = time.perf_counter()
    missing = [r for r in spec.rows if r not in images]
    images.update(out_of_distribution_sets(missing, mnist, num_out=spec.num_out, data_dir=data_dir,
                                           generator=generator, adversarial=adversarial))
    timings["ood_sets_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored: dict[str, dict[str, torch.Tensor]] = {}
    log_liks: dict[str, torch.Tensor] = {}
    groups = {"mnist": mnist, **{r: images[r].to(device) for r in spec.rows}}
    for i, (name, x) in enumerate(groups.items()):
        scored[name], log_liks[name] = scorer.score(x)
        report(progress, TASK, i + 1, len(groups))
    timings["scoring_seconds"] = time.perf_counter() - t0
    columns = scorer.columns
    results = {row: {c: ood_metrics(scored["mnist"][c], scored[row][c]) for c in columns} for row in spec.rows}
    auroc = _metric_table("auroc", "AUROC (%) per out-of-distribution set and score (the paper's Table 2)", "auroc",
                          results, columns, spec.rows, paper=True)
    ap = _metric_table("average_precision", "Average precision (%)", "average_precision", results, columns, spec.rows)
    fpr = _metric_table("fpr_at_95_tpr", "FPR at 95% TPR (%, lower is better)", "fpr_at_95_tpr", results, columns,
                        spec.rows)
    warnings = []
    rows_json = {}
    for row in spec.rows:
        best_column = max(columns, key=lambda c: results[row][c]["auroc"])
        best = _percent(results[row][best_column]["auroc"])
        meets = best >= PAPER_BEST_AUROC[row]
        if not meets:
            warnings.append(f"{ROW_TITLES[row]}: our best AUROC {best}% ({best_column}) is below the paper's "
                            f"best {PAPER_BEST_AUROC[row]}%")
        rows_json[row] = {"num_images": int(len(groups[row])), "best_column": best_column, "best_auroc_percent": best,
                          "paper_best_auroc_percent": PAPER_BEST_AUROC[row], "at_or_above_paper": meets,
                          "columns": {c: {k: (round(v, 6) if isinstance(v, float) else v)
                                          for k, v in results[row][c].items()
                                          if k not in ("positive_class", "score_sign")} for c in columns}}
    table_section = Section(
        "table_2", "Detection of out-of-distribution sets (Choi & Jang, Table 2 layout)",
        paragraphs=[
            f"In-distribution: {len(mnist)} MNIST test digits. Positive class: {OOD_POSITIVE_CLASS}; every score "
            f"reads {OOD_SCORE_SIGN}, so AUROC 50% is chance and below 50% means the score ranks OoD inputs as "
            "more in-distribution than MNIST.",
            *[f"{c}: {COLUMN_MEANINGS[c]}." for c in columns],
            f"Adversarial: {spec.adversarial_steps} FGSM steps of {spec.adversarial_epsilon} from Gaussian noise "
            "N(0.5, 0.25^2) on VAE member 1's likelihood bound.",
            "Every member scores the same images, so an ensemble's mean and variance are per image. The paper's "
            "column is a reference, not a like-for-like figure: the authors' public code draws new random images "
            "for each member before averaging position by position, which with the shipped ensemble reads about 15 "
            "points higher on the flips (benchmarks/ood_misaligned_ensemble.py in the ppl-audit repository).",
        ],
        tables=[auroc, ap, fpr], warnings=warnings,
    )
    hist_figures = []
    for c in columns:
        key = c.lower().replace(" ", "_").replace("(", "").replace(")", "").replace("=", "").replace(".", "")
        hist_figures.append(figures.value_histograms(
            f"hist_{key}", f"{c} score per dataset",
            f"Histogram of the {c} score ({COLUMN_MEANINGS[c]}); higher = more out-of-distribution. "
            "Bins span the 0.5-99.5% quantiles of all scores; values outside are counted in the end bins.",
            {("MNIST (in)" if name == "mnist" else ROW_TITLES[name]): scored[name][c] for name in groups},
            xlabel=f"{c} score"))
    ic_rows, ic_json = [], {}
    for name, ll in log_liks.items():
        ic = diagnostics.ensemble_waic_loo(ll.double().numpy())
        ic_json[name] = {k: v for k, v in ic.items() if not isinstance(v, list)}
        n = ic["num_inputs"]
        ic_rows.append([("MNIST (in)" if name == "mnist" else ROW_TITLES[name]), n,
                        round(ic["elpd_waic"] / n, 3), round(ic["p_waic"] / n, 4), ic["waic_warning"],
                        round(ic["elpd_loo"] / n, 3), ic["pareto_k_over_0_7"], ic["loo_warning"]])
    ic_section = Section(
        "information_criteria", "Dataset-level WAIC and PSIS-LOO of the VAE ensemble (ArviZ)",
        paragraphs=["The K VAE members are treated as K posterior draws (one chain) and each input as one "
                    "observation; ArviZ computes elpd_waic and elpd_loo (log scale, per input here) with its own "
                    "p_waic (population variance over members). With only K members PSIS-LOO's Pareto k is "
                    "unreliable (ArviZ flags it), so read the LOO column as indicative."],
        tables=[Table("information_criteria", "Per-input elpd of the VAE ensemble",
                      ["dataset", "inputs", "elpd_waic / input", "p_waic / input", "WAIC warning",
                       "elpd_loo / input", "Pareto k > 0.7", "LOO warning"], ic_rows)],
    )
    flip_rows = [r for r in FLIP_ROWS if r in missing] if mnist_labels is not None else []
    by_class = {row: _flips_by_class(scored, row, rows_json[row]["best_column"], mnist_labels) for row in flip_rows}
    missed = _missed(scored, spec.rows, rows_json, mnist_labels, flip_rows)
    sections = [table_section, *([_flips_section(by_class)] if by_class else []),
                _missed_section(missed, groups, len(mnist)),
                Section("histograms", "Score histograms (the paper's Figure 1, right)", figures=hist_figures),
                ic_section]
    met = [r["at_or_above_paper"] for r in rows_json.values()]
    spec_dict = dataclasses.asdict(spec)
    timings["total_seconds"] = time.perf_counter() - start
    return Report(
        kind=KIND,
        title=spec.title,
        summary=[f"Best AUROC at or above the paper's best MNIST figure on {sum(met)} of {len(met)} "
                 f"out-of-distribution sets ({len(mnist)} MNIST test digits in-distribution; columns "
                 f"{', '.join(columns)})."],
        metrics={"num_in": int(len(mnist)), "columns": list(columns), "positive_class": OOD_POSITIVE_CLASS,
                 "score_sign": OOD_SCORE_SIGN, "rows": rows_json, "rows_at_or_above_paper": int(sum(met)),
                 "rows_compared": len(met), "information_criteria": ic_json, "models": cards,
                 "least_flagged": missed, **({"flips_by_class": by_class} if by_class else {})},
        sections=sections,
        provenance={"seed": seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                    "versions": library_versions("arviz", "numpy", "matplotlib"),
                    "device": device.type},
        timings=timings,
    )


# --------------------------------------------------------------------------- scoring a folder

DEFAULT_REFERENCE = 2000  # MNIST test digits scored as the reference distribution of `ppl-audit ood`
FOLDER_TABLE_ROWS = 500  # per-image rows shown in the report (report.json holds every image)
FOLDER_GALLERY_COLUMN = "WAIC"  # the score whose most MNIST-like images the folder report shows
GALLERY_NAME_CHARS = 14  # an image's name under it in the gallery, cut to its last characters


def _short(name: str) -> str:
    """``name`` cut to its last ``GALLERY_NAME_CHARS`` characters (the end tells files and array rows apart)."""
    return name if len(name) <= GALLERY_NAME_CHARS else "…" + name[-(GALLERY_NAME_CHARS - 1):]


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
) -> Report:
    """Score every image of a folder against trained ensembles (``ppl-audit ood``).

    Each image gets every column's score (higher = more out-of-distribution)
    and, when MNIST test digits can be read as a reference, the share of
    reference digits scoring lower (the image's percentile: 0.99 means it
    looks less like MNIST than 99% of MNIST's own test digits).

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

    Raises
    ------
    ppl_audit.data.DataNotFoundError
        The folder is missing or holds no image.
    ppl_audit.data.DataFileError
        A file cannot be read or has the wrong size.
    """
    from ppl_audit.data import DataNotFoundError, load_dataset, load_image_folder

    seed = validate_seed(seed)
    if not isinstance(num_reference, int) or num_reference < 0:
        raise InvalidInputError(f"num_reference must be an integer >= 0, got {num_reference!r}")
    start = time.perf_counter()
    device = resolve_device(device)
    images, names = load_image_folder(folder)  # fails fast, before any model is loaded
    cards = {}
    if models is None:
        from ppl_audit.generative.vae_ensemble import load_vae_ensemble

        loading = dict(cache=cache, data_dir=data_dir, device=device, progress=progress)
        trained = {"vae": load_vae_ensemble(vae_ensemble, **loading)}
        if gan_ensemble:
            from ppl_audit.generative.gan_ensemble import load_gan_ensemble

            trained["gan"] = load_gan_ensemble(gan_ensemble, **loading)
        models = {k: t.module for k, t in trained.items()}
        cards = {k: {"card": t.card.name, "recipe_hash": t.card.recipe_hash} for k, t in trained.items()}
    scorer = EnsembleScorer(models["vae"], gan=models.get("gan"), iwae_samples=iwae_samples, seed=seed)
    scores, _ = scorer.score(images.to(device))
    reference, reference_note = None, ""
    if num_reference:
        try:
            ref_images = load_dataset("mnist", "test", data_dir=data_dir, limit=num_reference).images
            reference, _ = scorer.score(ref_images.to(device))
        except DataNotFoundError as exc:
            reference_note = f"No MNIST reference was scored ({exc}); percentiles are absent."
    columns = scorer.columns
    values = {c: scores[c].detach().cpu().double().numpy().round(4).tolist() for c in columns}
    percentiles = ({c: reference_percentiles(reference[c], scores[c]).round(4).tolist() for c in columns}
                   if reference is not None else {})
    per_image = []
    for i, name in enumerate(names):  # only dict building: scores and percentiles are computed above, batched
        entry: dict[str, Any] = {"image": name}
        for c in columns:
            entry[c] = values[c][i]
            if percentiles:
                entry[f"{c} percentile"] = percentiles[c][i]
        per_image.append(entry)
    header = ["image", *[k for k in per_image[0] if k != "image"]]
    table = Table("scores", f"Scores per image (first {min(len(names), FOLDER_TABLE_ROWS)} of {len(names)})",
                  header, [[e[k] for k in header] for e in per_image[:FOLDER_TABLE_ROWS]])
    hist = [figures.value_histograms(
        f"hist_{i + 1}", f"{c} score", f"{COLUMN_MEANINGS[c]}; higher = more out-of-distribution.",
        {"folder": scores[c], **({"MNIST test (reference)": reference[c]} if reference is not None else {})},
        xlabel=f"{c} score") for i, c in enumerate(columns)]
    likest = _lowest_first(scores[FOLDER_GALLERY_COLUMN], MISSED_IMAGES)
    gallery = figures.image_grid(
        "most_mnist_like", f"The {len(likest)} images {FOLDER_GALLERY_COLUMN} ranks as most MNIST-like",
        f"Lowest {FOLDER_GALLERY_COLUMN} score first; each label gives the file"
        + (" and, below it, the image's percentile among the reference digits." if percentiles else "."),
        images[likest].cpu(),
        [_short(names[i]) + (f"\n{_short_percentile(percentiles[FOLDER_GALLERY_COLUMN][i])}" if percentiles else "")
         for i in likest],
        data={"column": FOLDER_GALLERY_COLUMN, "images": [names[i] for i in likest]})
    summary = {c: {"mean": round(float(scores[c].mean()), 4), "min": round(float(scores[c].min()), 4),
                   "max": round(float(scores[c].max()), 4)} for c in columns}
    if reference is not None:
        for c in columns:
            summary[c]["reference_99th_percentile"] = round(float(reference[c].quantile(0.99)), 4)
            summary[c]["share_above_reference_99th"] = round(
                float((scores[c] > reference[c].quantile(0.99)).double().mean()), 4)
    paragraphs = [f"{len(names)} images from {folder}; scores read {OOD_SCORE_SIGN}.",
                  *[f"{c}: {COLUMN_MEANINGS[c]}." for c in columns]]
    if reference is not None:
        paragraphs.append(f"Percentiles are against {len(reference[columns[0]])} MNIST test digits scored the "
                          "same way.")
    elif reference_note:
        paragraphs.append(reference_note)
    spec_dict = {"folder": str(folder), "vae_ensemble": vae_ensemble, "gan_ensemble": gan_ensemble,
                 "num_reference": num_reference, "iwae_samples": iwae_samples}
    return Report(
        kind="ood-folder",
        title=f"Out-of-distribution scores of {folder}",
        summary=[f"{len(names)} images scored by {', '.join(columns)}."],
        metrics={"num_images": len(names), "columns": list(columns), "score_sign": OOD_SCORE_SIGN,
                 "summary": summary, "images": per_image, "models": cards},
        sections=[Section("scores", "Scores", paragraphs=paragraphs, tables=[table], figures=[*hist, gallery])],
        provenance={"seed": seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                    "versions": library_versions("arviz", "numpy", "matplotlib"),
                    "device": device.type},
        timings={"total_seconds": time.perf_counter() - start},
    )


__all__ = ["EnsembleScorer", "score_folder", "KIND", "OodAuditSpec", "PAPER_BEST_AUROC", "ROWS",
           "auroc_by_class", "out_of_distribution_sets", "run", "spec_from_toml"]
