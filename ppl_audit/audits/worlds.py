"""What a level-set audit can name: worlds (generative priors) and the classifiers audited on them.

A *world* is a named prior over images: the built-in house/rocket renderers
(``house-rocket``, ``house-rocket-circle``) or the MNIST decoder priors
(``mnist-vae``, ``mnist-gan``: a decoder from a 5-d standard normal latent).
Each world belongs to a *family*, and the classifier of an audit must be of
the same family: the house/rocket CNN (any house/rocket model card, by name
or path) or MNIST's LeNet-5 (``mnist-lenet5``, or any card of kind
``lenet-classifier``). The family also fixes the class names, so that a
target can be checked against them before any model is loaded.

Loading is lazy: nothing here imports the MNIST models until an MNIST world
is audited, so the house/rocket audit runs without them.
"""

from __future__ import annotations

import os
from typing import Sequence

from ppl_audit.errors import InvalidInputError
from ppl_audit.priors.base import Prior
from ppl_audit.priors.house_rocket import CLASS_NAMES as HOUSE_ROCKET_CLASSES
from ppl_audit.priors.house_rocket import WORLDS as HOUSE_ROCKET_WORLDS
from ppl_audit.progress import ProgressFn
from ppl_audit.training import load_model

HOUSE_ROCKET = "house-rocket"
MNIST = "mnist"
FAMILIES = (HOUSE_ROCKET, MNIST)
DECODER_PRIORS = ("mnist-vae", "mnist-gan")  # decoder-prior cards; the paper's Table 1 rows
WORLDS = tuple(HOUSE_ROCKET_WORLDS) + DECODER_PRIORS
MNIST_CLASSIFIER = "mnist-lenet5"  # the model card of the classifier of the paper's MNIST experiments
LENET_KIND = "lenet-classifier"  # [model] kind of LeNet cards: any such card is an MNIST classifier
HOUSE_ROCKET_KIND = "house-rocket-classifier"
FAMILY_OF_KIND = {HOUSE_ROCKET_KIND: HOUSE_ROCKET, LENET_KIND: MNIST}  # the classifier kinds a level set audits
DEFAULT_CLASSIFIERS = {HOUSE_ROCKET: "house-rocket-cnn", MNIST: MNIST_CLASSIFIER}
CLASS_NAMES = {HOUSE_ROCKET: tuple(HOUSE_ROCKET_CLASSES), MNIST: tuple(str(d) for d in range(10))}
DEFAULT_WORLDS = {HOUSE_ROCKET: tuple(HOUSE_ROCKET_WORLDS), MNIST: DECODER_PRIORS}
PAPER_ROWS = {"mnist-vae": "VAE", "mnist-gan": "GAN"}  # how the paper's Table 1 names each prior


def world_family(world: str) -> str:
    """The family of a world name.

    Examples
    --------
    >>> world_family("mnist-gan"), world_family("house-rocket-circle")
    ('mnist', 'house-rocket')
    """
    if world in DECODER_PRIORS:
        return MNIST
    if world in HOUSE_ROCKET_WORLDS:
        return HOUSE_ROCKET
    raise InvalidInputError(f"unknown world {world!r}; known worlds: {', '.join(WORLDS)}")


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
    from ppl_audit.cards import load_card

    kind = load_card(classifier).kind
    if kind not in FAMILY_OF_KIND:
        kinds = " or ".join(repr(k) for k in FAMILY_OF_KIND)
        raise InvalidInputError(f"classifier {classifier!r} is a {kind!r} model card; a level-set audit audits a "
                                f"card of kind {kinds}")
    return FAMILY_OF_KIND[kind]


def family_of_worlds(worlds: Sequence[str]) -> str:
    """The one family all ``worlds`` belong to; raises if they mix families."""
    families = {world_family(w) for w in worlds}
    if len(families) > 1:
        raise InvalidInputError(
            f"worlds {list(worlds)} mix families ({', '.join(sorted(families))}); one audit audits one "
            "classifier, so list the worlds of one family"
        )
    return families.pop()


def load_world(name: str, *, device, cache: str | None = None, data_dir: str | os.PathLike | None = None,
               progress: ProgressFn | None = None) -> Prior:
    """Build (house/rocket) or load (MNIST decoder, trained and cached on first use) a world's prior."""
    if world_family(name) == HOUSE_ROCKET:
        from ppl_audit.priors.house_rocket import make_world

        return make_world(name, device=device)
    from ppl_audit.priors import DECODER_KINDS

    return load_model(name, cache=cache, data_dir=data_dir, device=str(device), progress=progress,
                      kind=DECODER_KINDS).model


def load_classifier(name: str, *, device, cache: str | None = None, data_dir: str | os.PathLike | None = None,
                    progress: ProgressFn | None = None):
    """Load the classifier of a card name (trained and cached on first use)."""
    kind = LENET_KIND if classifier_family(name) == MNIST else HOUSE_ROCKET_KIND
    return load_model(name, cache=cache, data_dir=data_dir, device=str(device), progress=progress, kind=kind).model


__all__ = [
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
    "MNIST_CLASSIFIER",
    "PAPER_ROWS",
    "WORLDS",
    "classifier_family",
    "family_of_worlds",
    "load_classifier",
    "load_world",
    "world_family",
]
