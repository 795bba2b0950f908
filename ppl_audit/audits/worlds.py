"""What a level-set audit can name: worlds (generative priors) and the classifiers audited on them.

A *world* is a named prior over images: the built-in house/rocket renderers
(``house-rocket``, ``house-rocket-circle``) or the MNIST decoder priors
(``mnist-vae``, ``mnist-gan``: a decoder from a 5-d standard normal latent), and
the labelled mixtures of per-class digit generators (``mnist-class-vae``,
``mnist-class-gan``), which know each sample's true digit, and ``notmnist-vae``
(letters: a class no digit classifier saw).
Each world belongs to a *family*, and the classifier of an audit must be of
the same family: the house/rocket CNN (any house/rocket model card, by name
or path) or MNIST's LeNet-5 (``mnist-lenet5``, or any card of kind
``lenet-classifier``). The family also fixes the class names, so that a
target can be checked against them before any model is loaded.

A *user's* classifier or prior is a model file or an entry point
(``model.onnx``, ``program.pt2``, ``package.module:factory``; see
:mod:`ppl_audit.classifiers.external`): it forms the ``user`` family, whose
classes the audit is given (or the model's metadata names) and which pairs
with any world, its images resized to the classifier's input where declared.

Loading is lazy: nothing here imports the MNIST models until an MNIST world
is audited, so the house/rocket audit runs without them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from ppl_audit.classifiers.external import MODEL_FILE_SUFFIXES
from ppl_audit.classifiers.external import is_model_source
from ppl_audit.errors import InvalidInputError
from ppl_audit.paths import SAFE_NAME_RULE, is_safe_name
from ppl_audit.priors.base import Prior
from ppl_audit.priors.house_rocket import CLASS_NAMES as HOUSE_ROCKET_CLASSES
from ppl_audit.priors.house_rocket import WORLDS as HOUSE_ROCKET_WORLDS
from ppl_audit.progress import ProgressFn
from ppl_audit.training import load_model

HOUSE_ROCKET = "house-rocket"
MNIST = "mnist"
USER = "user"  # a model file or entry point the user gives: any classes, any world
FAMILIES = (HOUSE_ROCKET, MNIST, USER)
DECODER_PRIORS = ("mnist-vae", "mnist-gan")  # decoder-prior cards; the paper's Table 1 rows
# Per-class generator cards: as worlds, the labelled mixture of their ten digit generators
CLASS_MIXTURE_PRIORS = ("mnist-class-vae", "mnist-class-gan")
NOVEL_CLASS_PRIORS = ("notmnist-vae",)  # 28 x 28 decoder priors of classes MNIST's classifiers never saw
WORLDS = tuple(HOUSE_ROCKET_WORLDS) + DECODER_PRIORS + CLASS_MIXTURE_PRIORS + NOVEL_CLASS_PRIORS
MNIST_CLASSIFIER = "mnist-lenet5"  # the model card of the classifier of the paper's MNIST experiments
LENET_KIND = "lenet-classifier"  # [model] kind of LeNet cards: any such card is an MNIST classifier
HOUSE_ROCKET_KIND = "house-rocket-classifier"
FAMILY_OF_KIND = {HOUSE_ROCKET_KIND: HOUSE_ROCKET, LENET_KIND: MNIST}  # the classifier kinds a level set audits
DEFAULT_CLASSIFIERS = {HOUSE_ROCKET: "house-rocket-cnn", MNIST: MNIST_CLASSIFIER}
CLASS_NAMES = {HOUSE_ROCKET: tuple(HOUSE_ROCKET_CLASSES), MNIST: tuple(str(d) for d in range(10))}
DEFAULT_WORLDS = {HOUSE_ROCKET: tuple(HOUSE_ROCKET_WORLDS), MNIST: DECODER_PRIORS}
PAPER_ROWS = {"mnist-vae": "VAE", "mnist-gan": "GAN"}  # how the paper's Table 1 names each prior


_REGISTERED_WORLDS: dict[str, Callable[..., Prior]] = {}


def register_world(name: str, make: Callable[..., Prior], *, replace: bool = False) -> None:
    """Name a prior of your own, so that audits (``worlds = [name]``, ``--world name``) can use it.

    Parameters
    ----------
    name : str
        A safe name, not a built-in world's.
    make : callable
        ``make(device=...) -> Prior``, called when an audit loads the world.
    replace : bool
        Allow replacing a world registered under the same name.

    Examples
    --------
    >>> from ppl_audit.priors import make_world
    >>> register_world("my-house-rocket", lambda device: make_world("house-rocket", device=device))
    >>> world_family("my-house-rocket")
    'user'
    """
    if not isinstance(name, str) or not is_safe_name(name) or name in WORLDS:
        raise InvalidInputError(f"a registered world needs a safe name ({SAFE_NAME_RULE}) that is not a built-in "
                                f"world's, got {name!r}")
    if not callable(make):
        raise InvalidInputError(f"register_world needs a callable make(device=...) -> Prior, got {make!r}")
    if name in _REGISTERED_WORLDS and not replace and _REGISTERED_WORLDS[name] is not make:
        raise InvalidInputError(f"a world named {name!r} is already registered; pass replace=True")
    _REGISTERED_WORLDS[name] = make


def is_registered_world(name: str) -> bool:
    """Whether ``name`` was registered in this process with :func:`register_world` (it exists only here)."""
    return name in _REGISTERED_WORLDS


def world_label(world: str) -> str:
    """The name a world's sections and figure files carry: the built-in name, or a safe stem of a user's model.

    Examples
    --------
    >>> world_label("house-rocket"), world_label("models/My Decoder.onnx"), world_label("pkg.dec:build")
    ('house-rocket', 'My_Decoder', 'pkg.dec-build')
    """
    if not is_model_source(world):
        return world
    stem = Path(world).stem if Path(world).suffix.lower() in MODEL_FILE_SUFFIXES else world.replace(":", "-")
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".")[:64] or "prior"


def families_agree(classifier_family_: str, world_family_: str) -> bool:
    """A user's classifier audits any world and a user's prior any classifier; built-ins pair within a family."""
    return USER in (classifier_family_, world_family_) or classifier_family_ == world_family_


def world_family(world: str) -> str:
    """The family of a world name.

    Examples
    --------
    >>> world_family("mnist-gan"), world_family("house-rocket-circle")
    ('mnist', 'house-rocket')
    """
    if is_model_source(world) or world in _REGISTERED_WORLDS:
        return USER
    if world in DECODER_PRIORS + CLASS_MIXTURE_PRIORS + NOVEL_CLASS_PRIORS:
        return MNIST
    if world in HOUSE_ROCKET_WORLDS:
        return HOUSE_ROCKET
    raise InvalidInputError(f"unknown world {world!r}; known worlds: {', '.join(WORLDS)}, or a prior of your own "
                            f"({' or '.join(MODEL_FILE_SUFFIXES)} file, or package.module:factory)")


def classifier_family(classifier: str) -> str:
    """The family of a classifier's model card (name or path), from its kind.

    Raises
    ------
    AuditFileError
        The card cannot be read (what is wrong with it, in one line).
    InvalidInputError
        The card is of a kind no level-set family audits.

    Examples
    --------
    >>> classifier_family("mnist-lenet5"), classifier_family("house-rocket-cnn")
    ('mnist', 'house-rocket')
    >>> classifier_family("mnist-vae")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: classifier 'mnist-vae' is a 'vae' model card; a level-set audit audits a card of kind 'house-rocket-classifier' or 'lenet-classifier'
    """
    if classifier == MNIST_CLASSIFIER:
        return MNIST
    if is_model_source(classifier):
        return USER
    from ppl_audit.cards import load_card

    kind = load_card(classifier).kind
    if kind not in FAMILY_OF_KIND:
        kinds = " or ".join(repr(k) for k in FAMILY_OF_KIND)
        raise InvalidInputError(f"classifier {classifier!r} is a {kind!r} model card; a level-set audit audits a "
                                f"card of kind {kinds}")
    return FAMILY_OF_KIND[kind]


def family_of_worlds(worlds: Sequence[str]) -> str:
    """The one built-in family of ``worlds`` (users' priors fit any; ``user`` when all are); raises if they mix."""
    families = {world_family(w) for w in worlds} - {USER}
    if len(families) > 1:
        raise InvalidInputError(
            f"worlds {list(worlds)} mix families ({', '.join(sorted(families))}); one audit audits one "
            "classifier, so list the worlds of one family"
        )
    return families.pop() if families else USER


def load_world(name: str, *, device, cache: str | None = None, data_dir: str | os.PathLike | None = None,
               progress: ProgressFn | None = None) -> Prior:
    """Build (house/rocket), load (MNIST decoder, trained and cached on first use) or read (a user's) prior."""
    if name in _REGISTERED_WORLDS:
        return _REGISTERED_WORLDS[name](device=device)
    if world_family(name) == USER:
        from ppl_audit.classifiers.external import load_prior_file

        return load_prior_file(name, device=device)
    if world_family(name) == HOUSE_ROCKET:
        from ppl_audit.priors.house_rocket import make_world

        return make_world(name, device=device)
    from ppl_audit.priors import DECODER_KINDS

    if name in CLASS_MIXTURE_PRIORS:
        from ppl_audit.priors.class_mixture import class_mixture_prior

        return class_mixture_prior(load_model(name, cache=cache, data_dir=data_dir, device=str(device),
                                              progress=progress, kind=("class-vae", "class-gan")),
                                   CLASS_NAMES[MNIST])
    return load_model(name, cache=cache, data_dir=data_dir, device=str(device), progress=progress,
                      kind=DECODER_KINDS).model


def load_classifier(name: str, *, device, cache: str | None = None, data_dir: str | os.PathLike | None = None,
                    progress: ProgressFn | None = None, **user: Any):
    """Load the classifier of a card name (trained and cached on first use), or a user's model.

    ``user``: for a user's model file or entry point, what
    :func:`~ppl_audit.classifiers.external.load_classifier_file` takes
    (``class_names``, ``resize``); ignored for model cards.
    """
    family = classifier_family(name)
    if family == USER:
        from ppl_audit.classifiers.external import load_classifier_file

        return load_classifier_file(name, device=device, **user)
    kind = LENET_KIND if family == MNIST else HOUSE_ROCKET_KIND
    return load_model(name, cache=cache, data_dir=data_dir, device=str(device), progress=progress, kind=kind).model


__all__ = [
    "CLASS_MIXTURE_PRIORS",
    "CLASS_NAMES",
    "DECODER_PRIORS",
    "DEFAULT_CLASSIFIERS",
    "DEFAULT_WORLDS",
    "FAMILIES",
    "FAMILY_OF_KIND",
    "HOUSE_ROCKET",
    "HOUSE_ROCKET_KIND",
    "LENET_KIND",
    "MNIST",
    "MODEL_FILE_SUFFIXES",
    "USER",
    "MNIST_CLASSIFIER",
    "NOVEL_CLASS_PRIORS",
    "PAPER_ROWS",
    "WORLDS",
    "classifier_family",
    "families_agree",
    "is_registered_world",
    "world_label",
    "family_of_worlds",
    "load_classifier",
    "load_world",
    "register_world",
    "world_family",
]
