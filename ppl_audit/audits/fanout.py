"""The audits' units of work, and how a worker finds their models by name.

- one level set (the level-set audit's targets, calibration grid points, graded-sweep steps):
  :func:`level_set_unit`; or, with smc option ``run_groups``, one group of a target's SMC runs
  (:func:`map_level_sets`);
- one shard of a latent search (classification by synthesis): :func:`sharded_search`;
- one class's confident region (confidently-wrong and novel-class audits) lives in
  :mod:`~ppl_audit.audits.confident_regions`, with :func:`world_by_name` as a worker's prior recipe.

In process a unit uses the driver's loaded models; on a Ray worker it loads them by name (:class:`ModelNames`,
:func:`worker_where`) from the driver's cache path, once per worker process. Models given as Python objects
cannot travel, so a remote executor refuses them up front (:func:`check_travels`).
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
from ppl_audit.progress import ProgressFn, report
from ppl_audit.sampling import LevelSetResult, SMCGroup, sample_level_set, sample_smc_group
from ppl_audit.training import load_model

GENERATOR_KINDS = ("class-vae", "class-gan")  # the cards whose members make per-class generators
PATH_OPTIONS = ("weights",)  # classifier options that name files: made absolute, as a worker's cwd differs


def travelling(name: str | None) -> str | None:
    """``name`` made absolute where it is a file here (a worker resolves relative paths elsewhere)."""
    if isinstance(name, str) and os.path.exists(name):
        return os.path.abspath(name)
    return name


def worker_where(cache, data_dir, device) -> dict[str, str | None]:
    """Where a worker loads models from, as plain strings: the driver's cache resolved (workers read the
    same folder whatever their environment says), its data folder, its device."""
    return {"cache": str(cache_dir(cache)), "data_dir": None if data_dir is None else str(data_dir),
            "device": str(device)}


def given_objects(**objects) -> list[str]:
    """The names of the models given as Python objects (a remote executor cannot send them)."""
    return [name for name, value in objects.items() if value is not None]


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
        options = {k: (travelling(v) if k in PATH_OPTIONS else v) for k, v in (classifier_options or {}).items()}
        return cls(classifier=travelling(classifier), world=travelling(world),
                   classifier_options=tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                                   for k, v in options.items())),
                   **worker_where(cache, data_dir, device))

    def load(self):
        """``(world, classifier)``, loaded in this worker process once and kept for its later units."""
        classifier = worker_classifier(self.classifier, options=self.classifier_options, cache=self.cache,
                                       data_dir=self.data_dir, device=self.device)
        world = worker_model(("world", self.world, self.cache, self.device),
                             lambda: registry.load_world(self.world, device=torch.device(self.device), cache=self.cache,
                                                         data_dir=self.data_dir))
        return world, classifier


def worker_classifier(name: str, *, options: tuple[tuple[str, Any], ...] = (), cache: str | None,
                      data_dir: str | None, device: str):
    """The classifier ``name`` (``options``: a user classifier's, as pairs), loaded once per worker process."""
    return worker_model(("classifier", name, tuple(options), cache, device),
                        lambda: registry.load_classifier(name, device=torch.device(device), cache=cache,
                                                         data_dir=data_dir, **dict(options)))


def worker_generators(card: str, *, cache: str | None, data_dir: str | None, device: str):
    """The per-class generators of ``card``, loaded once per worker process (never trained there)."""
    return worker_model(("generators", card, cache, device),
                        lambda: load_model(card, cache=cache, data_dir=data_dir, device=device,
                                           kind=GENERATOR_KINDS).module)


def sample_unit(*, names: ModelNames, target: Sequence[float], sampling: dict[str, Any], world=None,
                classifier=None, progress: ProgressFn | None = None, map_groups=None) -> tuple[LevelSetResult, float]:
    """One level set and its seconds; the world and classifier are loaded by ``names`` when not given.

    ``map_groups``: where the level set's SMC run groups run (:func:`~ppl_audit.sampling.sample_level_set`)."""
    if world is None or classifier is None:
        world, classifier = names.load()
    start = time.perf_counter()
    samples = sample_level_set(world, classifier, target, device=torch.device(names.device), progress=progress,
                               map_groups=map_groups, **sampling)
    return samples, time.perf_counter() - start


def smc_group_unit(*, names: ModelNames, target: Sequence[float], sampling: dict[str, Any], group: SMCGroup,
                   world=None, classifier=None):
    """One group of a level set's SMC runs (:func:`~ppl_audit.sampling.sample_smc_group`), with
    :func:`sample_unit`'s arguments; the models are loaded by ``names`` when not given."""
    if world is None or classifier is None:
        world, classifier = names.load()
    return sample_smc_group(world, classifier, target, group, device=torch.device(names.device), **sampling)


def map_level_sets(executor: Executor, units: Sequence[Unit], *, run_groups: int = 1, task: str = "level sets",
                   progress: ProgressFn | None = None) -> list:
    """The results of :func:`level_set_unit` s: each unit on ``executor``, or, where a remote executor
    meets smc option ``run_groups`` above 1, the units one after another on this driver with each round's
    run groups fanned out (a few large targets spread over more workers than they are many).

    Both ways give the same samples: a group's stream depends on its level set's seed and place alone.
    """
    if not executor.remote or run_groups <= 1:
        return executor.map(units, task=task, progress=progress)
    results = []
    for done, unit in enumerate(units):
        report(progress, task, done, len(units))

        def map_groups(groups, unit=unit):
            group_units = [Unit(f"{unit.name} {g.name}", smc_group_unit, {**unit.kwargs, "group": g},
                                local={"world": unit.local.get("world"), "classifier": unit.local.get("classifier")},
                                gpu=unit.gpu) for g in groups]
            return executor.map(group_units, task=f"{unit.name}: SMC run groups", progress=progress)

        results.append(sample_unit(**unit.kwargs, **unit.local, map_groups=map_groups))
    report(progress, task, len(units), len(units))
    return results


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





# ---------------------------------------------------------------- latent-search shards (classification by synthesis)

def search_shard(*, card: str, cache: str | None, data_dir: str | None, device: str, images: torch.Tensor,
                 config, generators=None):
    """:func:`~ppl_audit.classifiers.synthesis.latent_search` of one shard, without its refinement (which
    the driver runs once over every shard's contested images)."""
    import dataclasses

    from ppl_audit.classifiers.synthesis import latent_search

    if generators is None:
        generators = worker_generators(card, cache=cache, data_dir=data_dir, device=device)
    return latent_search(generators, images.to(device), dataclasses.replace(config, refine_restarts=0))


def sharded_search(executor: Executor, generators, card: str, x: torch.Tensor, config, *, cache, data_dir, device,
                   progress: ProgressFn | None = None):
    """The latent search of ``x`` in shards of ``config.chunk`` images, one unit each, merged on ``x``'s
    device; then the refinement of the contested images on the driver.

    The shards follow the search's own chunks, and every shard draws the same prior latents (the
    config's seed), so the result equals one :func:`latent_search` over ``x``, byte for byte.
    """
    from ppl_audit.classifiers.synthesis import SearchResult, refine_contested

    start = time.perf_counter()
    shards = x.split(config.chunk)
    common = {"card": travelling(card), "config": config, **worker_where(cache, data_dir, device)}
    units = [Unit(f"latent search shard {i + 1} of {len(shards)}", search_shard,
                  {**common, "images": shard.detach().cpu()}, local={"generators": generators},
                  gpu=torch.device(device).type == "cuda") for i, shard in enumerate(shards)]
    parts = executor.map(units, task="latent search shards", progress=progress)
    timings = {key: sum(p.timings.get(key, 0.0) for p in parts) for key in parts[0].timings}

    def joined(field: str) -> torch.Tensor:  # on x's device, as SynthesisClassifier.search returns them
        return torch.cat([getattr(p, field).to(x.device) for p in parts])

    merged = SearchResult(joined("distances"), joined("latents"), joined("start_distances"),
                          sum(p.seconds for p in parts), sum(p.generator_seconds for p in parts), timings)
    if config.refine_restarts:
        merged = refine_contested(generators, x, merged, config, progress=progress)
    merged.seconds = time.perf_counter() - start
    return merged

def world_by_name(*, k: str, name: str, cache: str | None, data_dir: str | None, device: str):
    """The world ``name`` (the same for every class ``k``): a worker's recipe for a novel-class prior."""
    return registry.load_world(name, device=torch.device(device), cache=cache, data_dir=data_dir)


__all__ = ["GENERATOR_KINDS", "ModelNames", "check_travels", "given_objects", "level_set_unit", "map_level_sets",
           "sample_unit", "search_shard", "sharded_search", "smc_group_unit", "travelling", "worker_classifier",
           "worker_generators", "worker_where", "world_by_name"]
