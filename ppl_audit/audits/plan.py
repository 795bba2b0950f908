"""Which audits a classifier's models allow: the parts of a classifier audit named by flags instead of a file.

``ppl-audit audit --classifier C --prior P ... --novel-prior N ...`` runs, on classifier ``C``:

- a level-set audit over the priors (the classifier family's default targets; for a classifier of your
  own, one ambiguous target, uniform over its classes);
- a calibration audit on each labelled prior (one that knows each sample's class: the house/rocket worlds
  and the class mixtures ``mnist-class-vae`` and ``mnist-class-gan``), along the pair of a two-class
  classifier, else at confidence levels :data:`CONFIDENCE_GRID` of every class;
- a confidently-wrong audit on each class mixture (its generators without class ``k``, for every ``k``);
- a graded sweep between the first two classes on the first prior;
- a novel-class audit on each novel-class prior.

A prior of your own (a file or ``package.module:factory``) joins the level sets and the sweep; whether it
is labelled cannot be told from its name, so a calibration of it needs an audit file.
"""

from __future__ import annotations

from typing import Sequence

from ppl_audit.audits import worlds as registry
from ppl_audit.audits.classifier import ClassifierAuditSpec, PartSpec
from ppl_audit.errors import InvalidInputError

CONFIDENCE_GRID = (0.5, 0.9)  # two levels per class keep a 10-class calibration at 20 level sets
LABELLED_WORLDS = tuple(registry.HOUSE_ROCKET_WORLDS) + registry.CLASS_MIXTURE_PRIORS


def _class_names(classifier: str, family: str, class_names: Sequence[str] | None) -> tuple[str, ...]:
    if family != registry.USER:
        return registry.CLASS_NAMES[family]
    if not class_names or len(class_names) < 2:
        raise InvalidInputError(f"classifier {classifier!r} is a model of your own: name its classes "
                                "(--class-names a,b,...)")
    return tuple(class_names)


def _levelset_settings(family: str, priors: tuple[str, ...], names: tuple[str, ...]) -> dict:
    settings = {"worlds": list(priors)}
    if family == registry.USER:
        settings["classes"] = list(names)
        settings["targets"] = [{"name": "ambiguous", "probabilities": [1 / len(names)] * len(names)}]
    return settings


def _calibration_settings(world: str, names: tuple[str, ...]) -> dict:
    if len(names) == 2:
        return {"world": world, "pair": list(names)}
    return {"world": world, "mode": "confidence", "grid": list(CONFIDENCE_GRID)}


def plan_parts(classifier: str, *, priors: Sequence[str] = (), novel_priors: Sequence[str] = (),
               class_names: Sequence[str] | None = None) -> tuple[PartSpec, ...]:
    """The inline parts that ``classifier``, ``priors`` and ``novel_priors`` allow (module docstring).

    Raises
    ------
    InvalidInputError
        No prior is named and the classifier's family has no default priors, a classifier of one's own
        comes without class names, or a prior is unknown.

    Examples
    --------
    >>> [p.kind for p in plan_parts("house-rocket-cnn", priors=["house-rocket"])]
    ['levelset', 'calibration', 'sweep']
    """
    family, label = registry.classifier_family(classifier), registry.world_label(classifier)  # reads the card once
    names = _class_names(classifier, family, class_names)
    priors = tuple(priors) or tuple(registry.DEFAULT_WORLDS.get(family, ()))
    if not priors:
        raise InvalidInputError(f"classifier {classifier!r} has no built-in priors: name at least one (--prior)")
    for world in (*priors, *novel_priors):
        registry.world_family(world)  # an unknown name is one line here, before any part is built
    user = {"classes": list(names)} if family == registry.USER else {}
    parts = [PartSpec(kind="levelset", settings={"title": f"Level sets of {label}",
                                                  **_levelset_settings(family, priors, names)})]
    parts += [PartSpec(kind="calibration", settings={"title": f"Calibration of {label} on {w}", **user,
                                                     **_calibration_settings(w, names)})
              for w in priors if w in LABELLED_WORLDS]
    parts += [PartSpec(kind="confidently-wrong", settings={"title": f"Confidently-wrong inputs of {label}",
                                                           "generators": w, **user})
              for w in priors if w in registry.CLASS_MIXTURE_PRIORS]
    a, b = names[:2]
    parts.append(PartSpec(kind="sweep", settings={"title": f"Graded sweep of {label} from {a} to {b}",
                                                  "world": priors[0], "pair": [a, b], **user}))
    parts += [PartSpec(kind="novel-class", settings={"title": f"Novel-class extrapolation of {label}: "
                                                              f"{registry.world_label(w)}", "prior": w, **user})
              for w in novel_priors]
    return tuple(parts)


def spec_from_models(classifier: str, *, priors: Sequence[str] = (), novel_priors: Sequence[str] = (),
                     class_names: Sequence[str] | None = None, title: str | None = None,
                     device: str | None = None) -> ClassifierAuditSpec:
    """A :class:`ClassifierAuditSpec` whose parts are :func:`plan_parts`' (what ``ppl-audit audit`` flags build)."""
    parts = plan_parts(classifier, priors=priors, novel_priors=novel_priors, class_names=class_names)
    return ClassifierAuditSpec(title=title or f"Audit of {registry.world_label(classifier)}", classifier=classifier,
                               parts=parts, device=device)


__all__ = ["CONFIDENCE_GRID", "LABELLED_WORLDS", "plan_parts", "spec_from_models"]
