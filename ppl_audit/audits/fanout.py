"""Level sets as units of work: what the level-set, calibration and sweep audits send to an executor.

One unit samples one level set. In process it uses the driver's loaded world and classifier; on a Ray
worker it loads them by name (:class:`ModelNames`) from the driver's cache path, once per worker process.
Models given as Python objects cannot travel, so a remote executor refuses them up front
(:func:`check_travels`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ppl_audit.audits import worlds as registry
from ppl_audit.cache import cache_dir
from ppl_audit.errors import InvalidInputError
from ppl_audit.execute import Executor, Unit, worker_model
from ppl_audit.progress import ProgressFn
from ppl_audit.sampling import LevelSetResult, sample_level_set

PATH_OPTIONS = ("weights",)  # classifier options that name files: made absolute, as a worker's cwd differs


def _travelling(name: str | None) -> str | None:
    """``name`` made absolute where it is a file here (a worker resolves relative paths elsewhere)."""
    if isinstance(name, str) and os.path.exists(name):
        return os.path.abspath(name)
    return name


@dataclass(frozen=True)
class ModelNames:
    """What a worker loads, by name: the classifier, the world, and where their weights live.

    Attributes
    ----------
    classifier, world : str
        Card names, model files (absolute) or entry points.
    classifier_options : tuple of (str, value)
        A user classifier's options (``class_names``, ``resize``, ...), as :func:`worlds.load_classifier` takes.
    cache : str
        The driver's cache folder, resolved: workers read the same one.
    data_dir : str or None
    device : str
    """

    classifier: str
    world: str
    classifier_options: tuple[tuple[str, Any], ...] = ()
    cache: str | None = None
    data_dir: str | None = None
    device: str = "cpu"

    @classmethod
    def of(cls, classifier: str, world: str, *, cache, data_dir, device, classifier_options=None) -> "ModelNames":
        """The names as a worker needs them: files absolute, the cache resolved as the driver resolves it."""
        options = {k: (_travelling(v) if k in PATH_OPTIONS else v) for k, v in (classifier_options or {}).items()}
        return cls(classifier=_travelling(classifier), world=_travelling(world),
                   classifier_options=tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                                   for k, v in options.items())),
                   cache=str(cache_dir(cache)), data_dir=None if data_dir is None else str(data_dir),
                   device=str(device))

    def load(self):
        """``(world, classifier)``, loaded in this worker process once and kept for its later units."""
        where = dict(device=torch.device(self.device), cache=self.cache, data_dir=self.data_dir)
        classifier = worker_model(("classifier", self.classifier, self.classifier_options, self.cache, self.device),
                                  lambda: registry.load_classifier(self.classifier, **where,
                                                                   **dict(self.classifier_options)))
        world = worker_model(("world", self.world, self.cache, self.device),
                             lambda: registry.load_world(self.world, **where))
        return world, classifier


def sample_unit(*, names: ModelNames, target: Sequence[float], sampling: dict[str, Any], world=None,
                classifier=None, progress: ProgressFn | None = None) -> tuple[LevelSetResult, float]:
    """One level set and its seconds; the world and classifier are loaded by ``names`` when not given."""
    if world is None or classifier is None:
        world, classifier = names.load()
    start = time.perf_counter()
    samples = sample_level_set(world, classifier, target, device=torch.device(names.device), progress=progress,
                               **sampling)
    return samples, time.perf_counter() - start


def level_set_unit(name: str, names: ModelNames, target: Sequence[float], sampling: dict[str, Any], *, world,
                   classifier, progress: ProgressFn | None = None) -> Unit:
    """The unit that samples one level set (``sampling``: :func:`sample_level_set`'s keywords, seed included)."""
    task_progress = (lambda _task, done, total: progress(name, done, total)) if progress else None
    return Unit(name, sample_unit, {"names": names, "target": list(target), "sampling": dict(sampling)},
                local={"world": world, "classifier": classifier, "progress": task_progress},
                gpu=torch.device(names.device).type == "cuda")


def check_travels(executor: Executor, *, given: Sequence[str] = (), worlds: Sequence[str] = ()) -> None:
    """Refuse, before any work, models a remote executor cannot load by name on its workers.

    ``given``: what the caller passed as Python objects (``"classifier"``, ``"world"``); ``worlds``: the
    world names, of which those registered in this process (:func:`worlds.register_world`) exist only here.
    """
    if not executor.remote:
        return
    if given:
        raise InvalidInputError(f"the {executor.kind} executor loads models by name on its workers; a "
                                f"{' and '.join(given)} given as a Python object cannot travel: name it (a card, a "
                                "model file or package.module:factory) or use the local executor")
    local_only = [w for w in worlds if registry.is_registered_world(w)]
    if local_only:
        raise InvalidInputError(f"world {local_only[0]!r} was registered in this process (register_world) and "
                                f"the {executor.kind} executor's workers cannot load it: give it as a model file "
                                "or package.module:factory, or use the local executor")


__all__ = ["ModelNames", "check_travels", "level_set_unit", "sample_unit"]
