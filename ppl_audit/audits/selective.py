"""The selective-classification audit: risk-coverage on MNIST mixed with out-of-distribution images.

Wang et al. ("Safer Classification by Synthesis", 2017) compare classifiers
by their risk-coverage curves on a test set of MNIST digits plus images from
elsewhere (Omniglot characters, notMNIST letters) that count as wrong
whatever label they get. A classifier abstains on its least confident
inputs; coverage is the share it keeps, risk the share of kept inputs it
gets wrong. This audit runs, on one such test set:

* **CNN**: the LeNet-5 (``models/mnist-lenet5.toml``), confidence = max softmax;
* **VAE / GAN synthesis**: :class:`~ppl_audit.classifiers.synthesis.SynthesisClassifier`
  over per-class generators (``models/mnist-class-vae.toml``,
  ``models/mnist-class-gan.toml``), confidence = minus the distance to the
  closest generation;
* **hybrid**: the CNN's label with a synthesis classifier's confidence (the paper's Figure 9a);
* **1-NN**: the nearest training image's label, confidence = minus its distance;
* **SDIM** (``models/mnist-sdim.toml``): class-conditional Gaussians on learned
  features, confidence = the best class log-likelihood minus that class's
  1st-percentile threshold; plus its own Table 2 (accuracy on what it keeps,
  rejection rate) and Table 3 (share of out-of-distribution images rejected).

For each: MNIST test accuracy (beside the paper's), the risk-coverage curve,
AURC and the lowest attainable risk (ties never split), and how many
out-of-distribution images it covers at its maximum confidence; explanation
figures (the paper's Figure 6) for both synthesis classifiers; and the
latent search's cost, with the part spent in generator passes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ppl_audit._device import resolve_device
from ppl_audit.audits.fanout import check_travels, sharded_search
from ppl_audit.audits.spec import DEFAULT_SEED, spec_hash, validate_seed
from ppl_audit.errors import InvalidInputError
from ppl_audit.execute import current_executor
from ppl_audit.metrics import risk_coverage
from ppl_audit.progress import ProgressFn
from ppl_audit.provenance import library_versions
from ppl_audit.audits.verdict import with_verdict
from ppl_audit.report import Report, Section, Table
from ppl_audit.report import figures
from ppl_audit.training import load_model
from ppl_audit.validators import is_positive_int

KIND = "selective"
NUM_DIGITS = 10  # the test set's labels: MNIST's digits
OOD_SETS = ("omniglot", "notmnist", "fashion-mnist")  # out-of-distribution sets the data folder offers
SET_TITLES = {"omniglot": "Omniglot", "notmnist": "notMNIST", "fashion-mnist": "Fashion-MNIST"}
#: MNIST test accuracy (%) in Wang et al. (synthesis classifiers and 1-NN)
PAPER_ACCURACY = {"VAE synthesis": 98.35, "GAN synthesis": 97.81, "1-NN": 96.91}
TARGET_ACCURACY = {"SDIM": 99.5}  # the goal for SDIM (its paper's own MNIST accuracy is not recorded here)
PAPER_SDIM_TABLE_2 = {1: {"kept_accuracy": 99.95, "rejection_rate": 3.02}}  # MNIST, 1st-percentile thresholds
COVERAGE_GRID = tuple(round(0.05 * k, 2) for k in range(1, 21))  # where the hybrid is compared with the CNN
NUM_EXPLANATIONS = 6  # rows of each explanation figure
ORDINALS = {1: "1st", 2: "2nd"}
MAX_CURVE_POINTS = 1000  # risk-coverage points drawn per classifier (the metrics keep AURC from every point)
GENERATORS = {"class_vae": "VAE", "class_gan": "GAN"}  # spec field of each synthesis classifier's card, and its title
#: SearchConfig fields one kind of generator may set for itself (``class_vae_search``, ``class_gan_search``)
SEARCH_OVERRIDES = ("draws", "steps", "learning_rate", "prior_mass", "use_encoder", "refine_restarts",
                    "refine_ratio", "refine_draws", "refine_steps", "refine_learning_rate")


@dataclass(frozen=True)
class SelectiveAuditSpec:
    """What a selective-classification audit runs.

    Parameters
    ----------
    title : str
    cnn : str
        The LeNet-5's model card, or a classifier of your own of MNIST digits (a ``.onnx`` or
        ``.pt2`` file, or ``package.module:factory``) audited in its place; it also labels the hybrids.
    class_vae, class_gan : str
        Per-class generator cards (``""`` skips that synthesis classifier and its hybrid).
    sdim : str
        SDIM card (``""`` skips SDIM).
    nearest_neighbour : bool
        Include the 1-NN baseline (reads the MNIST training set).
    ood_sets : tuple of str
        Out-of-distribution sets mixed into the test set (``OOD_SETS``); may be empty.
    num_in : int, optional
        MNIST test digits (all 10,000 when absent).
    num_out : int
        At most this many images of each out-of-distribution set.
    draws, steps, learning_rate, prior_mass
        The latent search both synthesis classifiers share
        (:class:`~ppl_audit.classifiers.synthesis.SearchConfig`).
    class_vae_search, class_gan_search : dict
        What one kind of generator changes in that search, any of
        ``SEARCH_OVERRIDES`` (TOML: an ``[audit.class_gan_search]`` table), e.g.
        ``{"refine_restarts": 4}`` to refine the GANs' contested images only.
    sdim_percentile : int
        Which stored threshold (1 or 2) gives SDIM's risk-coverage confidence.
    explanations : int
        Rows of each explanation figure (half MNIST, half out-of-distribution).
    device : str
    data_dir : str, optional
    test_data : str, optional
        Your own labelled digits in place of MNIST's test set: an ``.npz`` with arrays ``images``
        (28 x 28 grey) and ``labels`` (0-9), read without unpickling; ``num_in`` still caps them. The
        report records it only when given.
    """

    title: str = "Selective classification on MNIST mixed with out-of-distribution images"
    cnn: str = "mnist-lenet5"
    class_vae: str = "mnist-class-vae"
    class_gan: str = "mnist-class-gan"
    sdim: str = "mnist-sdim"
    nearest_neighbour: bool = True
    ood_sets: tuple[str, ...] = ("omniglot", "notmnist")
    num_in: int | None = None
    num_out: int = 2000
    draws: int = 1000
    steps: int = 100
    learning_rate: float = 0.05
    prior_mass: float | None = 0.9
    class_vae_search: dict[str, Any] = field(default_factory=dict)
    class_gan_search: dict[str, Any] = field(default_factory=dict)
    sdim_percentile: int = 1
    explanations: int = NUM_EXPLANATIONS
    device: str = "auto"
    data_dir: str | None = None
    test_data: str | None = None

    def __post_init__(self):
        unknown = [s for s in self.ood_sets if s not in OOD_SETS]
        if unknown or len(set(self.ood_sets)) != len(self.ood_sets):
            raise InvalidInputError(f"ood_sets must be distinct names from {list(OOD_SETS)}, got {list(self.ood_sets)}")
        for name in ("num_out", "explanations"):
            value = getattr(self, name)
            if not is_positive_int(value):
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if self.test_data is not None and not (isinstance(self.test_data, str) and self.test_data.endswith(".npz")):
            raise InvalidInputError(f"test_data must be the path of an .npz file, got {self.test_data!r}")
        if self.num_in is not None and not is_positive_int(self.num_in):
            raise InvalidInputError(f"num_in must be a positive integer (or absent: all), got {self.num_in!r}")
        if self.sdim_percentile not in (1, 2):
            raise InvalidInputError(f"sdim_percentile must be 1 or 2 (the stored thresholds), got "
                                    f"{self.sdim_percentile!r}")
        if not self.cnn:
            raise InvalidInputError("cnn must name a lenet-classifier card (the baseline and the hybrids' labeller)")
        for key in GENERATORS:
            self.search_config(key)  # validates the shared search settings and each kind's changes to them

    def search_config(self, key: str | None = None):
        """The latent search of the generators in field ``key`` (``None``: the shared settings alone).

        Examples
        --------
        >>> spec = SelectiveAuditSpec(class_gan_search={"refine_restarts": 4})
        >>> spec.search_config("class_gan").refine_restarts, spec.search_config("class_vae").refine_restarts
        (4, 0)
        >>> SelectiveAuditSpec(class_gan_search={"chunk": 10})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ppl_audit.errors.InvalidInputError: class_gan_search: unknown setting(s) ['chunk']; allowed: draws, steps, ...
        """
        from ppl_audit.classifiers.synthesis import SearchConfig

        changes = {}
        if key is not None:
            if key not in GENERATORS:
                raise InvalidInputError(f"no synthesis classifier {key!r}; there are {list(GENERATORS)}")
            changes = getattr(self, f"{key}_search")
            if not isinstance(changes, dict):
                raise InvalidInputError(f"{key}_search must be a table of search settings, got {changes!r}")
            unknown = sorted(set(changes) - set(SEARCH_OVERRIDES))
            if unknown:
                raise InvalidInputError(f"{key}_search: unknown setting(s) {unknown}; allowed: "
                                        + ", ".join(SEARCH_OVERRIDES))
        shared = dict(draws=self.draws, steps=self.steps, learning_rate=self.learning_rate,
                      prior_mass=self.prior_mass)
        config = SearchConfig(**shared)
        try:
            return dataclasses.replace(config, **changes)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{key}_search: {exc}") from exc


SPEC = SelectiveAuditSpec  # the [audit] table's dataclass (audits.spec.spec_from_toml)


# --------------------------------------------------------------------------- the arithmetic


@dataclass
class MethodOutcome:
    """One selective classifier's labels and confidences on the mixed test set.

    ``labels`` and ``confidence`` are ``(N_in + N_out,)``: MNIST digits first,
    then the out-of-distribution images, whose predictions are always wrong.
    """

    name: str
    labels: torch.Tensor
    confidence: torch.Tensor
    note: str = ""


def summarise(outcome: MethodOutcome, truth: torch.Tensor, num_in: int) -> dict[str, Any]:
    """Accuracy on the MNIST part, the risk-coverage curve and what is covered at maximum confidence.

    Parameters
    ----------
    outcome : MethodOutcome
    truth : torch.Tensor
        ``(num_in,)`` labels of the MNIST digits.
    num_in : int
        How many of the outcome's inputs are MNIST digits (the rest are OoD).

    Returns
    -------
    dict
        ``mnist_accuracy``, ``aurc``, ``min_risk``, ``coverage_at_min_risk``,
        ``risk_at_full_coverage``, ``inputs_at_max_confidence``,
        ``ood_at_max_confidence``, ``curve`` (coverage and risk lists).

    Raises
    ------
    InvalidInputError
        Mismatched lengths.

    Examples
    --------
    >>> out = MethodOutcome("toy", torch.tensor([0, 1, 1]), torch.tensor([0.9, 0.5, 0.9]))
    >>> s = summarise(out, torch.tensor([0, 0]), 2)
    >>> s["mnist_accuracy"], s["ood_at_max_confidence"], round(s["min_risk"], 3)
    (0.5, 1, 0.5)
    """
    n = len(outcome.labels)
    if outcome.confidence.shape != (n,) or truth.shape != (num_in,) or not 0 < num_in <= n:
        raise InvalidInputError(f"{outcome.name}: {n} labels, {tuple(outcome.confidence.shape)} confidences, "
                                f"{tuple(truth.shape)} true labels for {num_in} in-distribution inputs")
    labels, confidence = outcome.labels.cpu(), outcome.confidence.detach().cpu().double()
    correct = torch.zeros(n, dtype=torch.bool)
    correct[:num_in] = labels[:num_in] == truth.cpu()
    rc = risk_coverage(confidence, correct)
    top = confidence == confidence.max()
    return {"mnist_accuracy": float(correct[:num_in].double().mean()), "aurc": rc["aurc"],
            "min_risk": rc["min_risk"], "coverage_at_min_risk": rc["coverage_at_min_risk"],
            "risk_at_full_coverage": rc["risk_at_full_coverage"], "inputs_at_max_confidence": int(top.sum()),
            "ood_at_max_confidence": int(top[num_in:].sum()),
            "curve": {"coverage": rc["coverage"], "risk": rc["risk"]}}


def risk_at(curve: dict[str, list], coverage: float) -> float:
    """The risk of the smallest-coverage point at or above ``coverage`` (the curve as a step function).

    A classifier cannot keep fewer inputs than its first threshold keeps (a
    CNN with many softmax values of exactly 1 starts at a large coverage), so
    below its first point it is charged that point's risk.

    Examples
    --------
    >>> risk_at({"coverage": [0.25, 0.5, 1.0], "risk": [0.0, 0.1, 0.2]}, 0.3)
    0.1
    """
    cov = np.asarray(curve["coverage"])
    i = int(np.searchsorted(cov, coverage - 1e-12, side="left"))
    return float(curve["risk"][min(i, len(cov) - 1)])


def compare_curves(candidate: dict, baseline: dict, grid=COVERAGE_GRID) -> dict[str, Any]:
    """Where ``candidate``'s risk exceeds ``baseline``'s on a grid of coverages.

    Examples
    --------
    >>> a = {"coverage": [0.5, 1.0], "risk": [0.0, 0.1]}
    >>> b = {"coverage": [0.5, 1.0], "risk": [0.05, 0.1]}
    >>> compare_curves(a, b, grid=(0.5, 1.0))["above"]
    []
    """
    rows = [(c, risk_at(candidate, c), risk_at(baseline, c)) for c in grid]
    above = [c for c, r, b in rows if r > b + 1e-12]
    return {"grid": list(grid), "candidate": [r for _, r, _ in rows], "baseline": [b for _, _, b in rows],
            "above": above, "at_or_below_everywhere": not above}


# --------------------------------------------------------------------------- what the audit found


@dataclass(frozen=True)
class Explanation:
    """The rows of one explanation figure (the paper's Figure 6), as data.

    Attributes
    ----------
    images : torch.Tensor
        ``(n, 1, 28, 28)``: the picked test images.
    generations : torch.Tensor
        ``(n, C, 1, 28, 28)``: each class's closest generation to each image.
    distances : torch.Tensor
        ``(n, C)``: their L2 distances.
    true_labels : tuple
        The true class of each MNIST row; ``None`` for an out-of-distribution row.
    """

    images: torch.Tensor
    generations: torch.Tensor
    distances: torch.Tensor
    true_labels: tuple[int | None, ...]


@dataclass(frozen=True)
class SynthesisSearch:
    """One synthesis classifier's latent search: its settings, its cost and its explanation rows.

    Attributes
    ----------
    key, title : str
        Spec field of the generators' card (``"class_vae"``) and its title (``"VAE"``).
    config : SearchConfig
        The search settings used (the audit's seed included).
    num_images, num_classes, latent_dim : int
    encoder_start : bool
        Whether the encoder mean could replace the Monte Carlo start (a VAE asked to use it).
    seconds, generator_seconds : float
        Wall-clock of the whole search and of its generator passes.
    timings : dict
        The search's own breakdown (``refined_images`` among it where refinement ran).
    explanation : Explanation
    """

    key: str
    title: str
    config: Any
    num_images: int
    num_classes: int
    latent_dim: int
    encoder_start: bool
    seconds: float
    generator_seconds: float
    timings: dict[str, float]
    explanation: Explanation


@dataclass(frozen=True)
class SDIMResults:
    """SDIM's own tables as numbers: Table 2 rows (fractions) and Table 3 rejection rates per OoD set."""

    percentile: int
    table_2: list[dict[str, Any]]
    table_3: dict[str, dict[str, float]]


@dataclass(frozen=True)
class SelectiveResults:
    """Everything :func:`evaluate` measured; :func:`present` turns it into a Report.

    Attributes
    ----------
    spec : SelectiveAuditSpec
    seed : int
    device : str
        The device type the audit ran on (``"cpu"``, ``"cuda"``).
    class_names : tuple of str
        The CNN's class names (every classifier's labels index them).
    num_in : int
        MNIST test digits in the mixed test set.
    num_out : dict
        Images of each out-of-distribution set, in the test set's order.
    outcomes : tuple of MethodOutcome
        Every selective classifier's labels and confidences, in the report's order.
    summaries : dict
        :func:`summarise` of each outcome, by name.
    hybrids : dict
        :func:`compare_curves` of each hybrid against the CNN, plus ``aurc_lower_than_cnn``.
    searches : dict
        :class:`SynthesisSearch` by spec field (``"class_vae"``, ``"class_gan"``), those that ran.
    sdim : SDIMResults or None
    cards : dict
        Card name, recipe hash and numeric training metrics of each loaded model (empty for given models).
    timings : dict
        Wall-clock seconds per stage.
    seconds : float
        Wall-clock seconds of the whole evaluation.
    """

    spec: SelectiveAuditSpec
    seed: int
    device: str
    class_names: tuple[str, ...]
    num_in: int
    num_out: dict[str, int]
    outcomes: tuple[MethodOutcome, ...]
    summaries: dict[str, dict[str, Any]]
    hybrids: dict[str, dict[str, Any]]
    searches: dict[str, SynthesisSearch]
    sdim: SDIMResults | None
    cards: dict[str, Any]
    timings: dict[str, float]
    seconds: float


# --------------------------------------------------------------------------- running it


def _load_images(spec: SelectiveAuditSpec, data_dir, images):
    from ppl_audit.data import load_dataset

    images = dict(images or {})
    mnist = images.pop("mnist", None)
    if mnist is None and spec.test_data:
        from ppl_audit.data import load_labelled_arrays

        test_images, test_labels = load_labelled_arrays(spec.test_data, num_classes=NUM_DIGITS)
        mnist = (test_images[:spec.num_in], test_labels[:spec.num_in])
    if mnist is None:
        test = load_dataset("mnist", "test", data_dir=data_dir, limit=spec.num_in)
        mnist = (test.images, test.labels)
    ood = {}
    for name in spec.ood_sets:
        ood[name] = images[name] if name in images else load_dataset(name, data_dir=data_dir,
                                                                     limit=spec.num_out).images
        if len(ood[name]) == 0:
            raise InvalidInputError(f"the out-of-distribution set {name!r} has no images")
    return mnist, ood


def _test_set(spec: SelectiveAuditSpec, data_dir, images, device):
    """``(mnist, truth, ood, x)``: the digits, their labels, each OoD set, and all of them as one batch."""
    (mnist, truth), ood = _load_images(spec, data_dir, images)
    if len(mnist) == 0:
        raise InvalidInputError("the audit needs at least one MNIST test digit")
    x = torch.cat([mnist, *ood.values()]).to(device)  # MNIST digits first, then each OoD set in order
    return mnist, truth.to(device), ood, x


def run(
    spec: SelectiveAuditSpec,
    *,
    seed: int = DEFAULT_SEED,
    progress: ProgressFn | None = None,
    cache: str | None = None,
    data_dir: str | None = None,
    models: dict[str, Any] | None = None,
    images: dict[str, Any] | None = None,
) -> Report:
    """Run the selective-classification audit and return its :class:`~ppl_audit.report.Report`.

    ``run(spec, ...)`` is ``present(evaluate(spec, ...))``.

    Parameters
    ----------
    spec : SelectiveAuditSpec
    seed : int
        Seeds the latent search's prior draws.
    progress, cache, data_dir
        As for the other audits (``data_dir`` wins over ``spec.data_dir``).
    models : dict, optional
        ``{"cnn": Classifier, "class_vae": generators or None, "class_gan": ...,
        "sdim": SDIMClassifier or None, "train": (images, labels) or None}``
        instead of loading the spec's cards (tests use tiny ones).
    images : dict, optional
        ``{"mnist": (images, labels), SET: images}`` instead of reading the data folder.

    Examples
    --------
    >>> report = run(SelectiveAuditSpec(num_in=500), data_dir="/path/to/data")  # doctest: +SKIP
    """
    return present(evaluate(spec, seed=seed, progress=progress, cache=cache, data_dir=data_dir, models=models,
                            images=images))


def evaluate(
    spec: SelectiveAuditSpec,
    *,
    seed: int = DEFAULT_SEED,
    progress: ProgressFn | None = None,
    cache: str | None = None,
    data_dir: str | None = None,
    models: dict[str, Any] | None = None,
    images: dict[str, Any] | None = None,
) -> SelectiveResults:
    """Run every selective classifier on the mixed test set and measure it; render nothing.

    Parameters
    ----------
    spec, seed, progress, cache, data_dir, models, images
        As for :func:`run`.

    Returns
    -------
    SelectiveResults

    Raises
    ------
    InvalidInputError
        No MNIST digit, an empty out-of-distribution set, or mismatched model outputs.

    Examples
    --------
    >>> results = evaluate(SelectiveAuditSpec(num_in=500), data_dir="/path/to/data")  # doctest: +SKIP
    >>> results.summaries["CNN"]["aurc"]  # doctest: +SKIP
    """
    seed = validate_seed(seed)
    start = time.perf_counter()
    device = resolve_device(spec.device)
    data_dir = data_dir if data_dir is not None else spec.data_dir
    timings: dict[str, float] = {}
    cards: dict[str, Any] = {}
    executor = current_executor()
    check_travels(executor, given=["models"] if models is not None else [])
    if models is None:
        models, cards = _load_models(spec, cache=cache, data_dir=data_dir, device=device, progress=progress)
    timings["models_seconds"] = time.perf_counter() - start
    mnist, truth, ood, x = _test_set(spec, data_dir, images, device)
    num_in, num_out = len(mnist), {name: int(len(v)) for name, v in ood.items()}
    cnn = models["cnn"]
    class_names = tuple(cnn.class_names)

    t0 = time.perf_counter()
    outcomes = [_cnn_outcome(cnn, x)]
    timings["cnn_seconds"] = time.perf_counter() - t0
    searches: dict[str, SynthesisSearch] = {}
    for key, title in GENERATORS.items():
        if models.get(key) is None:
            continue
        searches[key], synthesis = _synthesis(key, title, models[key], spec, seed, x, truth, num_in, class_names,
                                              cnn_labels=outcomes[0].labels, progress=progress,
                                              where=dict(cache=cache, data_dir=data_dir, device=device))
        outcomes += synthesis
        timings[f"{key}_search_seconds"] = searches[key].seconds
    if spec.nearest_neighbour:
        t0 = time.perf_counter()
        outcomes.append(_nearest_neighbour(models.get("train"), x, class_names, data_dir, device))
        timings["nearest_neighbour_seconds"] = time.perf_counter() - t0
    sdim = None
    if models.get("sdim") is not None:
        t0 = time.perf_counter()
        sdim_outcome, sdim = _sdim(models["sdim"], x, mnist.to(device), truth, ood, spec.sdim_percentile)
        outcomes.append(sdim_outcome)
        timings["sdim_seconds"] = time.perf_counter() - t0

    summaries = {o.name: summarise(o, truth, num_in) for o in outcomes}
    return SelectiveResults(spec=spec, seed=seed, device=device.type, class_names=class_names,
                            num_in=num_in, num_out=num_out,
                            outcomes=tuple(outcomes), summaries=summaries, hybrids=_hybrids_vs_cnn(summaries),
                            searches=searches, sdim=sdim, cards=cards, timings=timings,
                            seconds=time.perf_counter() - start)


def _users_classifier(source: str, device):
    """``(classifier, card entry)`` of a classifier of the user's (``cnn`` = a file or entry point) that takes
    MNIST's 28 x 28 grey digits and names ten classes."""
    from ppl_audit.classifiers.external import check_input_compatible, load_classifier_file

    model = load_classifier_file(source, device=device)
    check_input_compatible((1, 28, 28), model, what="MNIST's digits")
    if model.num_classes != NUM_DIGITS:
        raise InvalidInputError(f"classifier {source} has {model.num_classes} classes; the selective audit's "
                                f"test set is labelled with the {NUM_DIGITS} digits")
    return model, {"file": source}


def _load_models(spec: SelectiveAuditSpec, *, cache, data_dir, device, progress):
    from ppl_audit.classifiers.external import is_model_source

    loading = dict(cache=cache, data_dir=data_dir, device=device, progress=progress)
    users = {}
    if is_model_source(spec.cnn):
        users["cnn"] = _users_classifier(spec.cnn, device)
        trained = {}
    else:
        trained = {"cnn": load_model(spec.cnn, kind="lenet-classifier", **loading)}
    for key in ("class_vae", "class_gan"):
        card = getattr(spec, key)
        if card:
            trained[key] = load_model(card, kind=("class-vae", "class-gan"), **loading)
    if spec.sdim:
        trained["sdim"] = load_model(spec.sdim, kind="sdim-classifier", **loading)
    models: dict[str, Any] = {key: model for key, (model, _) in users.items()}
    models.update({key: t.model for key, t in trained.items()})
    cards = {key: card for key, (_, card) in users.items()}
    cards.update({k: {"card": t.card.name, "recipe_hash": t.card.recipe_hash,
                      **{m: v for m, v in t.metrics.items() if isinstance(v, (int, float)) and "seconds" not in m}}
                  for k, t in trained.items()})
    return models, cards


def _cnn_outcome(cnn, x: torch.Tensor) -> MethodOutcome:
    """The CNN's labels and max-softmax confidence."""
    from ppl_audit.detectors.baselines import MaxSoftmaxDetector

    with torch.no_grad():
        cnn_probs = cnn.probs(x)
    cnn_labels = cnn_probs.argmax(1)
    cnn_confidence = 1 - MaxSoftmaxDetector(cnn).scores_from(cnn_probs)  # the Detector contract, sign undone
    return MethodOutcome("CNN", cnn_labels, cnn_confidence, "max softmax of the LeNet-5")


def _synthesis(key: str, title: str, generators, spec: SelectiveAuditSpec, seed: int, x: torch.Tensor,
               truth: torch.Tensor, num_in: int, class_names, *, cnn_labels: torch.Tensor,
               progress, where: dict[str, Any]) -> tuple[SynthesisSearch, list[MethodOutcome]]:
    """One synthesis classifier and its hybrid (CNN labels, synthesis confidence), and its explanation rows.

    On a remote executor the latent search runs in shards (``where``: the cache, data and device the
    workers load the generators' card from); in process, in one call. Both give the same result.
    """
    from ppl_audit.classifiers.synthesis import SynthesisClassifier
    from ppl_audit.detectors.synthesis import SynthesisDetector

    config = dataclasses.replace(spec.search_config(key), seed=seed)
    classifier = SynthesisClassifier(generators, class_names, config, progress=progress)
    executor = current_executor()
    if executor.remote:
        result = sharded_search(executor, generators, getattr(spec, key), x, config, progress=progress, **where)
    else:
        result = classifier.search(x)
    confidence = -SynthesisDetector(classifier).scores_from(result)  # the Detector contract, sign undone
    outcomes = [MethodOutcome(f"{title} synthesis", result.labels, confidence,
                              "label of the closest class generation; confidence = -its L2 distance"),
                MethodOutcome(f"hybrid ({title} confidence, CNN label)", cnn_labels, confidence,
                              "the paper's Figure 9a")]
    picks = _explanation_picks(result, truth, num_in, spec.explanations)
    explanation = Explanation(images=x[picks], generations=classifier.generations(result.subset(picks)),
                              distances=result.distances[picks],
                              true_labels=tuple(int(truth[i]) if i < num_in else None for i in picks.tolist()))
    search = SynthesisSearch(key=key, title=title, config=config, num_images=len(result),
                             num_classes=generators.num_members, latent_dim=generators.latent_dim,
                             encoder_start=bool(config.use_encoder and hasattr(generators, "encode")),
                             seconds=result.seconds, generator_seconds=result.generator_seconds,
                             timings=dict(result.timings), explanation=explanation)
    return search, outcomes


def _nearest_neighbour(train, x: torch.Tensor, class_names, data_dir, device) -> MethodOutcome:
    """The 1-NN baseline over the MNIST training set (or the given ``(images, labels)``)."""
    from ppl_audit.classifiers.nearest_neighbour import NearestNeighbourClassifier
    from ppl_audit.detectors.baselines import NearestNeighbourDetector

    if train is None:
        from ppl_audit.data import load_dataset

        full = load_dataset("mnist", "train", data_dir=data_dir)
        train = (full.images, full.labels)
    nearest = NearestNeighbourClassifier(train[0].to(device), train[1].to(device), class_names)
    labels, similarity = nearest.predict(x)
    similarity = -NearestNeighbourDetector(nearest).scores_from(similarity)  # the contract's check
    return MethodOutcome("1-NN", labels, similarity, "nearest training image; -its L2 distance")


def _sdim(sdim, x, mnist, truth, ood, percentile: int) -> tuple[MethodOutcome, SDIMResults]:
    """SDIM's outcome on the mixed test set, its Table 2 on MNIST and its Table 3 on each OoD set."""
    from ppl_audit.classifiers.sdim import ood_rejection_rate, selective_table
    from ppl_audit.detectors.sdim import SDIMDetector

    detector = SDIMDetector(sdim, percentile=percentile)
    prediction = sdim.predict(x, percentile)  # one pass: labels, best log-likelihoods and thresholds
    confidence = -detector.scores_from(prediction)
    outcome = MethodOutcome("SDIM", prediction.labels, confidence,
                            f"best class log-likelihood minus that class's {ORDINALS[percentile]}-percentile threshold")
    rows = selective_table(sdim, mnist, truth)
    table_3 = {name: {f"percentile_{p}": ood_rejection_rate(sdim, images.to(x.device), p) for p in (1, 2)}
               for name, images in ood.items()}
    return outcome, SDIMResults(percentile=percentile, table_2=rows, table_3=table_3)


def _hybrids_vs_cnn(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each hybrid's risk against the CNN's on ``COVERAGE_GRID``, and whether its AURC is lower."""
    hybrids = {name: compare_curves(s["curve"], summaries["CNN"]["curve"])
               for name, s in summaries.items() if name.startswith("hybrid")}
    for name, comparison in hybrids.items():
        comparison["aurc_lower_than_cnn"] = summaries[name]["aurc"] < summaries["CNN"]["aurc"]
    return hybrids


def _explanation_picks(result, truth: torch.Tensor, num_in: int, rows: int) -> torch.Tensor:
    """Rows for an explanation figure: MNIST digits (misclassified ones first) then OoD images, evenly spaced."""
    labels = result.labels.cpu()
    n = len(labels)
    wrong = (labels[:num_in] != truth.cpu()).nonzero().flatten()
    in_rows = rows if n == num_in else (rows + 1) // 2
    picks = wrong[: max(1, in_rows // 3)].tolist()
    spread = torch.linspace(0, num_in - 1, in_rows).long().tolist()
    picks += [i for i in spread if i not in picks][: in_rows - len(picks)]
    if n > num_in:
        picks += torch.linspace(num_in, n - 1, rows - len(picks)).long().tolist()
    return torch.tensor(picks[:rows])


# --------------------------------------------------------------------------- the report


def present(results: SelectiveResults) -> Report:
    """Turn :func:`evaluate`'s results into the audit's Report: every figure, table, section and warning.

    Parameters
    ----------
    results : SelectiveResults

    Returns
    -------
    Report
        Sections ``accuracy``, ``risk_coverage``, then ``synthesis`` (when a synthesis classifier ran) and
        ``sdim`` (when SDIM ran). ``results`` is left unchanged.

    Examples
    --------
    >>> report = present(evaluate(SelectiveAuditSpec(num_in=500), data_dir="/path/to/data"))  # doctest: +SKIP
    >>> [s.name for s in report.sections]  # doctest: +SKIP
    ['accuracy', 'risk_coverage', 'synthesis', 'sdim']
    """
    start = time.perf_counter()
    spec = results.spec
    sections = [_accuracy_section(results), _risk_section(results)]
    if results.searches:
        sections.append(_synthesis_section(results))
    if results.sdim is not None:
        sections.append(_sdim_section(results.sdim, results.num_out))
    spec_dict = {k: v for k, v in dataclasses.asdict(spec).items() if k != "test_data" or v is not None}
    metrics = _metrics(results)
    # the total counts the rendering too, as it did when one function did both
    timings = {**results.timings, "total_seconds": results.seconds + time.perf_counter() - start}
    provenance = {"seed": results.seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                  "versions": library_versions("numpy", "matplotlib"), "device": results.device}
    return with_verdict(Report(kind=KIND, title=spec.title, summary=_summary(results), metrics=metrics,
                               sections=sections, provenance=provenance, timings=timings))


def _summary(results: SelectiveResults) -> list[str]:
    """The report's opening paragraphs: the test set, the CNN, then one line per other classifier."""
    cnn = results.summaries["CNN"]
    summary = [f"Test set: {results.num_in} MNIST digits + "
               + (", ".join(f"{n} {SET_TITLES[s]}" for s, n in results.num_out.items())
                  or "no out-of-distribution images")
               + " (out-of-distribution images count as wrong).",
               f"CNN: lowest attainable risk {cnn['min_risk']:.4f} (at coverage {cnn['coverage_at_min_risk']:.3f}); "
               f"{cnn['ood_at_max_confidence']} out-of-distribution images get its maximum confidence."]
    for name, s in results.summaries.items():
        if name != "CNN":
            summary.append(f"{name}: MNIST accuracy {100 * s['mnist_accuracy']:.2f}%, AURC {s['aurc']:.5f}, lowest "
                           f"risk {s['min_risk']:.4f} at coverage {s['coverage_at_min_risk']:.3f}.")
    return summary


def _metrics(results: SelectiveResults) -> dict[str, Any]:
    """The report's headline metrics (floats of each method's summary rounded to 6 places, curves left out)."""
    metrics = {"num_in": results.num_in, "num_out": results.num_out,
               "methods": {name: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in s.items()
                                  if k != "curve"} for name, s in results.summaries.items()},
               "hybrid_vs_cnn": results.hybrids, "models": results.cards,
               "latent_search": {s.title: {"seconds": s.seconds, "generator_seconds": s.generator_seconds,
                                           **{k: round(v, 3) for k, v in s.timings.items()}}
                                 for s in results.searches.values()}}
    if results.sdim is not None:
        metrics["sdim"] = _sdim_metrics(results.sdim)
    return metrics


def _accuracy_section(results: SelectiveResults) -> Section:
    """MNIST test accuracy of every classifier but the hybrids, beside the paper's and the target."""
    accuracy_rows = [[name, round(100 * s["mnist_accuracy"], 2), PAPER_ACCURACY.get(name),
                      TARGET_ACCURACY.get(name)]
                     for name, s in results.summaries.items() if not name.startswith("hybrid")]
    return Section("accuracy", "MNIST test accuracy", tables=[Table(
        "accuracy", "Accuracy on the MNIST test digits alone (%)",
        ["classifier", "accuracy (%)", "paper (%)", "target (%)"], accuracy_rows)],
        paragraphs=[f"{o.name}: {o.note}." for o in results.outcomes if o.note])


def _risk_section(results: SelectiveResults) -> Section:
    """Risk-coverage: the AURC table, the curves' figure, each hybrid against the CNN and its warnings."""
    summaries = results.summaries
    rc_rows = [[name, round(s["aurc"], 5), round(s["min_risk"], 5), round(s["coverage_at_min_risk"], 4),
                round(s["risk_at_full_coverage"], 4), s["inputs_at_max_confidence"], s["ood_at_max_confidence"]]
               for name, s in summaries.items()]
    curves = {name: _thin(s["curve"]["coverage"], s["curve"]["risk"]) for name, s in summaries.items()}
    rc_figure = figures.xy_plot(
        "risk_coverage", "Risk-coverage curves (Wang et al., Figures 8 and 9a)",
        "Each classifier keeps its most confident inputs; coverage = share kept, risk = share of kept inputs "
        "that are wrong (out-of-distribution images are always wrong). Tied confidences are never split.",
        curves, xlabel="coverage", ylabel="risk")
    return Section(
        "risk_coverage", "Risk-coverage on MNIST mixed with out-of-distribution images",
        paragraphs=[f"Test set: {results.num_in} MNIST test digits and "
                    + (", ".join(f"{n} {SET_TITLES[s]} images" for s, n in results.num_out.items())
                       or "no OoD images")
                    + "; out-of-distribution images count as wrong whatever label they get.",
                    "Lowest risk is the lowest a confidence threshold attains, at the largest coverage that attains "
                    "it; 'at max confidence' counts the inputs that share the classifier's highest confidence "
                    "(a threshold cannot separate them)."],
        tables=[Table("risk_coverage", "AURC and lowest attainable risk per classifier",
                      ["classifier", "AURC", "lowest risk", "coverage at lowest risk", "risk at full coverage",
                       "inputs at max confidence", "OoD at max confidence"], rc_rows),
                _hybrid_table(results)],
        figures=[rc_figure], warnings=_hybrid_warnings(results))


def _hybrid_table(results: SelectiveResults) -> Table:
    """The risk of the CNN and of each hybrid on ``COVERAGE_GRID``."""
    cnn_curve, hybrids = results.summaries["CNN"]["curve"], results.hybrids
    return Table(
        "hybrid_vs_cnn", "Risk of each hybrid and of the CNN on a grid of coverages",
        ["coverage", "CNN", *hybrids],
        [[c, round(risk_at(cnn_curve, c), 5), *(round(h["candidate"][i], 5) for h in hybrids.values())]
         for i, c in enumerate(COVERAGE_GRID)])


def _hybrid_warnings(results: SelectiveResults) -> list[str]:
    """A warning for each hybrid that is above the CNN somewhere on the grid or whose AURC is not lower."""
    summaries = results.summaries
    return [f"{name}: above the CNN at coverages {comparison['above']}; AURC "
            f"{summaries[name]['aurc']:.5f} against the CNN's {summaries['CNN']['aurc']:.5f}"
            for name, comparison in results.hybrids.items()
            if comparison["above"] or not comparison["aurc_lower_than_cnn"]]


def _synthesis_section(results: SelectiveResults) -> Section:
    """The latent search's settings and cost, and each synthesis classifier's explanation figure."""
    return Section(
        "synthesis", "Classification by synthesis: explanations and the latent search",
        paragraphs=[
            "Latent search: each class's prior draws (shared by all images) give every (image, class) its "
            "Monte Carlo start, the encoder mean replaces it where a VAE's is closer, then Adam steps run on "
            "every image and class at once, latents kept in the ball around 0 holding the stated share of each "
            "class prior's mass.",
            "Refinement (where on): the contested images, whose two closest classes lie within the stated ratio, "
            "are searched again, every class alike, with more draws and steps and other draws at each restart; "
            "every (image, class) keeps its best distance. Generations per second count the Adam steps' "
            "generations, the refinement's included."],
        tables=[Table("latent_search", "Latent search settings and cost",
                      ["generators", "images", "classes", "latent dim", "prior draws", "encoder start",
                       "Adam steps", "learning rate", "prior mass", "refinement", "seconds",
                       "in generator passes (s)", "in generator passes (%)", "generations per second"],
                      [_search_row(s) for s in results.searches.values()])],
        figures=[_explanation_figure(s, results.class_names) for s in results.searches.values()])


def _explanation_figure(search: SynthesisSearch, class_names):
    """One synthesis classifier's explanation figure (the paper's Figure 6)."""
    from ppl_audit.report.figures import explanation_figure

    rows = search.explanation
    return explanation_figure(rows.images, rows.generations, rows.distances, class_names=class_names,
                              true_labels=list(rows.true_labels), name=f"explanation_{search.key}",
                              title=f"{search.title} synthesis: each class's closest generation (L2 distance)")


def _search_row(search: SynthesisSearch) -> list:
    """One row of the latent-search table: the settings one kind of generator was searched with, and the cost."""
    config, classes, seconds = search.config, search.num_classes, search.seconds
    refined = int(search.timings.get("refined_images", 0))
    generations = (search.num_images * classes * (config.steps + 1)
                   + refined * classes * config.refine_restarts * (config.refine_steps + 1))
    refinement = (f"{refined} contested (ratio {config.refine_ratio}) x {config.refine_restarts} restarts of "
                  f"{config.refine_draws} draws, {config.refine_steps} steps, lr {config.refine_learning_rate}"
                  if config.refine_restarts else "off")
    return [search.title, search.num_images, classes, search.latent_dim, config.draws,
            "yes" if search.encoder_start else "no", config.steps,
            config.learning_rate, "none" if config.prior_mass is None else config.prior_mass, refinement,
            round(seconds, 1), round(search.generator_seconds, 1),
            round(100 * search.generator_seconds / max(seconds, 1e-9), 1),
            round(generations / max(seconds, 1e-9))]


def _sdim_metrics(sdim: SDIMResults) -> dict[str, Any]:
    """SDIM's tables as the report's metrics (fractions, not percentages)."""
    return {"table_2": sdim.table_2, "table_3": sdim.table_3}


def _sdim_section(sdim: SDIMResults, num_out: dict[str, int]) -> Section:
    """SDIM's Table 2 (accuracy on what it keeps) and, with OoD sets, Table 3 (share of them rejected)."""
    table_2 = Table("sdim_table_2", "SDIM on MNIST test: accuracy on what is kept at per-class thresholds "
                    "(the SDIM paper's Table 2)",
                    ["threshold percentile", "accuracy on all (%)", "accuracy on kept (%)", "rejection rate (%)",
                     "paper kept accuracy (%)", "paper rejection rate (%)"],
                    [[r["percentile"], round(100 * r["accuracy_all"], 3),
                      None if r["accuracy_kept"] is None else round(100 * r["accuracy_kept"], 3),
                      round(100 * r["rejection_rate"], 3),
                      PAPER_SDIM_TABLE_2.get(r["percentile"], {}).get("kept_accuracy"),
                      PAPER_SDIM_TABLE_2.get(r["percentile"], {}).get("rejection_rate")] for r in sdim.table_2])
    table_3_rows = [[SET_TITLES[name], num_out[name], round(100 * rates["percentile_1"], 2),
                     round(100 * rates["percentile_2"], 2)] for name, rates in sdim.table_3.items()]
    tables = [table_2]
    if table_3_rows:
        tables.append(Table("sdim_table_3", "SDIM: share of out-of-distribution images rejected (the paper's Table 3)",
                            ["dataset", "images", "rejected at 1st percentile (%)", "rejected at 2nd percentile (%)"],
                            table_3_rows))
    return Section("sdim", "SDIM: rejection by class-conditional likelihood thresholds",
                   paragraphs=["Thresholds are the 1st and 2nd percentiles of the class-conditional "
                               "log-likelihoods of correctly classified training images of each class; an "
                               "input is rejected when its best class log-likelihood is below that class's "
                               "threshold."],
                   tables=tables, metrics=_sdim_metrics(sdim))


def _thin(xs, ys, max_points: int = MAX_CURVE_POINTS):
    """At most ``max_points`` evenly spaced points of a curve, first and last kept (for the figure only)."""
    if len(xs) <= max_points:
        return list(xs), list(ys)
    keep = np.unique(np.linspace(0, len(xs) - 1, max_points).round().astype(int))
    return [xs[i] for i in keep], [ys[i] for i in keep]


__all__ = ["SPEC", "KIND", "Explanation", "MethodOutcome", "SDIMResults", "SelectiveAuditSpec", "SelectiveResults",
           "SynthesisSearch", "compare_curves", "evaluate", "present", "risk_at", "run", "summarise"]
