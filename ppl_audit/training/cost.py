"""What training a missing model will cost on this machine, measured before it starts.

A command that needs a model card's weights trains them on first use. Before it
does, the command line says which cards are missing, what each trains and how
long it will take *here*. The time is measured, not copied from the card: a
short calibration runs the card's own trainer, on the card's own data and
device, and times its first training steps through the progress callback
every trainer already reports; a private exception then stops it. The
estimate is::

    overhead (trainer start to the end of the warm-up steps: data loading, model building)
    + remaining steps x the timed steps' median (low) .. 75th percentile or mean (high) seconds per step

``remaining steps`` are the timed task's total (all epochs' batches) less the
warm-up ones, times what :attr:`~ppl_audit.training.Trainer.total_steps` adds for
trainers that report several tasks in turn. Evaluation after the last step
(test-set metrics) is not timed and is said to be so.

Examples
--------
>>> low, high = extrapolate([0.1, 0.1, 0.2, 0.1], total_steps=100, overhead_seconds=2.0)
>>> round(low, 3), round(high, 3)
(12.0, 14.5)
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ppl_audit.cache import cache_dir
from ppl_audit.cards import ModelCard
from ppl_audit.errors import PplAuditError, WeightsError
from ppl_audit.training.loader import as_card, before_training
from ppl_audit.training.registry import Trainer, get_trainer

CALIBRATION_SECONDS = 2.0  # timed step seconds wanted: enough for a median under a busy machine's noise
CALIBRATION_MIN_STEPS = 20  # and at least this many: 5 were too few on a busy machine (see SETTLE_FRACTION)
WARMUP_STEPS = 2  # the first steps pay for the allocator and thread pools: counted as overhead, not timed
# The first timed steps can still be slow: house-rocket-cnn's first 4 after the warm-up took 1.1 s each on a
# busy 2-core machine, then 0.05-0.25 s, and an estimate from 6 steps said 5.4-8.2 min for a 166 s run. The
# first quarter of the timed steps is therefore counted as overhead too, and only the rest sets the rate.
SETTLE_FRACTION = 0.25
CALIBRATION_MAX_SECONDS = 30.0  # past this, stop with what was timed (a trainer's setup is not interrupted)
HIGH_QUANTILE = 0.75  # the range's slow end: a busy machine's steps spread upwards
_clock = time.perf_counter  # one name for the probe's clock, which tests replace with a fake one


class _StopCalibration(BaseException):
    """Raised from the progress probe to end a calibration run (a BaseException: no trainer catches it)."""


class _NestedTraining(BaseException):
    """A calibration run asked for another model that is not cached (a GWIN's classifier)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Calibration:
    """What a calibration run timed.

    Attributes
    ----------
    task : str
        The progress task timed ("" when no step was reached).
    task_steps : int
        That task's total steps, as the trainer reported it.
    warmup_steps : int
        Steps counted in ``overhead_seconds`` rather than timed.
    overhead_seconds : float
        From the trainer's start to the end of the warm-up steps.
    step_seconds : tuple of float
        Seconds per step of each timed report after the warm-up.
    note : str
        Why nothing was timed, when nothing was.
    completed_seconds : float, optional
        The whole training's seconds, when it ended within the calibration (a tiny card):
        then the estimate is that time itself.
    load : str
        The machine's load while timing (``"load 5.2 on 2 cores"``): on a shared machine torch's
        threads wait for each other, and steps can run several times slower than on idle cores.
    """

    task: str = ""
    task_steps: int = 0
    warmup_steps: int = 0
    overhead_seconds: float = 0.0
    step_seconds: tuple[float, ...] = ()
    note: str = ""
    completed_seconds: float | None = None
    load: str = ""


@dataclass(frozen=True)
class TrainingEstimate:
    """One missing card: what will be trained and how long it takes here.

    Attributes
    ----------
    card : ModelCard
    total_steps : int
        Training steps of the whole run (0: not measured).
    seconds : tuple of float, optional
        ``(low, high)``; ``None`` when the calibration timed no step.
    calibration : Calibration
    """

    card: ModelCard
    total_steps: int
    seconds: tuple[float, float] | None
    calibration: Calibration


def extrapolate(step_seconds: Sequence[float], total_steps: int,
                overhead_seconds: float = 0.0) -> tuple[float, float]:
    """``(low, high)`` seconds of a training run of ``total_steps`` steps from timed steps.

    ``low`` uses the median step time (the typical step), ``high`` the
    :data:`HIGH_QUANTILE` one or the mean, whichever is larger (a few very slow steps on a
    shared machine pull the mean above the quartile, and a whole run pays the mean).

    Parameters
    ----------
    step_seconds : sequence of float
        Seconds per step, each > 0.
    total_steps : int
        Steps still to run (>= 0).
    overhead_seconds : float
        Seconds paid once (data loading, model building), added to both ends.

    Raises
    ------
    ValueError
        No step times, a step time that is not > 0, or a negative ``total_steps``.

    Examples
    --------
    >>> extrapolate([0.5], total_steps=10)
    (5.0, 5.0)
    >>> extrapolate([1.0, 1.0, 1.0, 5.0], total_steps=2)
    (2.0, 4.0)
    """
    if not step_seconds or min(step_seconds) <= 0:
        raise ValueError(f"step times must be a non-empty sequence of numbers > 0, got {list(step_seconds)[:5]}")
    if total_steps < 0:
        raise ValueError(f"total_steps must be >= 0, got {total_steps}")
    median = statistics.median(step_seconds)
    return overhead_seconds + total_steps * median, overhead_seconds + total_steps * _slow_step(step_seconds)


def _slow_step(step_seconds: Sequence[float]) -> float:
    """The high end's step time: the :data:`HIGH_QUANTILE` one (linear interpolation) or the mean, the larger."""
    return max(float(np.quantile(step_seconds, HIGH_QUANTILE)), statistics.fmean(step_seconds))


class _Probe:
    """A progress function that times one task's steps and stops the run once it has enough."""

    def __init__(self, task: str | None, *, seconds: float, min_steps: int, max_seconds: float):
        self.wanted_task, self.seconds, self.min_steps, self.max_seconds = task, seconds, min_steps, max_seconds
        self.start = _clock()
        self.task, self.total = "", 0
        self.warmup_steps, self.warmup_end = 0, 0.0
        self.last: tuple[int, float] | None = None
        self.steps: list[float] = []

    def __call__(self, task: str, done: int, total: int) -> None:
        now = _clock()
        if not self.task and (self.wanted_task is None or task == self.wanted_task):
            self.task, self.total = task, total
        if task == self.task:
            self._record(done, now)
        if now - self.start > self.max_seconds or (
                len(self.steps) >= self.min_steps and sum(self.steps) >= self.seconds):
            raise _StopCalibration

    def _record(self, done: int, now: float) -> None:
        if self.last is None or done <= WARMUP_STEPS:  # warm-up: counted with the start-up, not timed
            self.warmup_steps, self.warmup_end, self.last = done, now - self.start, (done, now)
            return
        last_done, last_time = self.last
        if done > last_done:  # a report may cover several steps (or repeat one)
            self.steps.append((now - last_time) / (done - last_done))
            self.last = (done, now)

    def calibration(self, completed: bool) -> Calibration:
        """What was timed; ``completed``: the trainer returned (the whole run fitted in the calibration)."""
        if completed:
            return Calibration(self.task, self.total, note="", completed_seconds=_clock() - self.start)
        settle = int(len(self.steps) * SETTLE_FRACTION)
        warmup_steps = self.warmup_steps + settle
        overhead, steps = self.warmup_end + sum(self.steps[:settle]), tuple(self.steps[settle:])
        note = "" if steps else (
            f"task {self.wanted_task!r} was not reached within {self.max_seconds:.0f} s"
            if self.wanted_task is not None and not self.task
            else f"no training step after the warm-up was timed within {self.max_seconds:.0f} s")
        return Calibration(self.task, self.total, warmup_steps, overhead, steps, note)


@contextmanager
def _quiet_rng(device) -> Iterator[None]:
    """Leave torch's global generators as they were: a calibration must not change what runs after it."""
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() and str(device) != "cpu" else []
    with torch.random.fork_rng(devices=cuda):
        yield


def _refuse_nested(trainer, card, **where) -> None:
    raise _NestedTraining(card.name)


def calibrate(card: ModelCard, *, data_dir=None, device="auto", cache=None,
              seconds: float = CALIBRATION_SECONDS, min_steps: int = CALIBRATION_MIN_STEPS,
              max_seconds: float = CALIBRATION_MAX_SECONDS) -> Calibration:
    """Run the card's trainer until a few steps are timed, then stop it; nothing is saved.

    Parameters
    ----------
    card : ModelCard
        As :func:`~ppl_audit.training.load_model` trains it (pinned, for a kind that pins).
    data_dir, device, cache
        As for training: the same data, device and cache (a trainer that loads another model reads it).
    seconds, min_steps : float, int
        Stop once ``min_steps`` steps after the warm-up are timed and they took ``seconds`` in all.
    max_seconds : float
        Stop at the first progress report past this many seconds, whatever was timed.

    Returns
    -------
    Calibration

    Raises
    ------
    PplAuditError
        Whatever training itself would raise first (missing data, a bad card): better now than
        after a notice.
    """
    trainer = get_trainer(card.kind)
    probe = _Probe(trainer.timed_task, seconds=seconds, min_steps=min_steps, max_seconds=max_seconds)
    extra = {"cache": cache} if trainer.needs_cache else {}
    try:
        with _quiet_rng(device), before_training(_refuse_nested):
            trainer.train(card, data_dir=data_dir, device=device, progress=probe, **extra)
    except _StopCalibration:
        return dataclasses.replace(probe.calibration(completed=False), load=machine_load())
    except _NestedTraining as missing:
        return Calibration(note=f"it first needs {missing.name}, which is not cached either")
    return dataclasses.replace(probe.calibration(completed=True), load=machine_load())


def machine_load() -> str:
    """``"load 5.2 on 2 cores, torch 2 threads"``: what the timed steps shared the machine with ("" where the
    system gives no load average).

    Examples
    --------
    >>> machine_load().startswith("load ") or machine_load() == ""
    True
    """
    try:
        one_minute = os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        return ""
    return f"load {one_minute:.1f} on {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


def estimate_training(card: ModelCard, trainer: Trainer | None = None, *, data_dir=None, device="auto",
                      cache=None, calibrate_fn: Callable[..., Calibration] = calibrate) -> TrainingEstimate:
    """Calibrate ``card`` and extrapolate to its whole training (see the module's formula).

    Examples
    --------
    >>> fake = lambda card, **kw: Calibration("training VAE", 100, 2, 1.5, (0.02, 0.02, 0.03))
    >>> from ppl_audit.cards import load_card
    >>> estimate = estimate_training(load_card("mnist-vae"), calibrate_fn=fake)
    >>> estimate.total_steps, [round(s, 2) for s in estimate.seconds]
    (100, [3.46, 3.95])
    """
    trainer = trainer or get_trainer(card.kind)
    measured = calibrate_fn(card, data_dir=data_dir, device=device, cache=cache)
    if measured.completed_seconds is not None:  # the whole run fitted in the calibration: its time is exact
        return TrainingEstimate(card, measured.task_steps, (measured.completed_seconds,) * 2, measured)
    if not measured.step_seconds:
        return TrainingEstimate(card, 0, None, measured)
    total = trainer.total_steps(card, measured.task_steps) if trainer.total_steps else measured.task_steps
    remaining = max(0, total - measured.warmup_steps)
    return TrainingEstimate(card, total, extrapolate(measured.step_seconds, remaining, measured.overhead_seconds),
                            measured)


# --------------------------------------------------------------------------- the words


def format_range(low: float, high: float) -> str:
    """``"4.2-5.0 min"`` in one unit, or one value when both round alike.

    Examples
    --------
    >>> format_range(250, 300), format_range(40, 40.2), format_range(80, 130)
    ('4.2-5.0 min', '40 s', '1.3-2.2 min')
    """
    unit, scale = (("s", 1), ("min", 60), ("h", 3600))[(high >= 90) + (high >= 5400)]
    digits = 0 if unit == "s" else 1
    lo, hi = f"{low / scale:.{digits}f}", f"{high / scale:.{digits}f}"
    return f"{lo} {unit}" if lo == hi else f"{lo}-{hi} {unit}"


def describe_card(card: ModelCard) -> str:
    """Kind, members, epochs, batch size and data of a card, in a few words.

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> describe_card(load_card("mnist-vae-ensemble"))
    'vae-ensemble, 5 members, 12 epochs, batches of 128; data: dataset mnist, train_split train, test_split test'
    """
    parts = [card.kind]
    for table, key, words in (("architecture", "members", "members"), ("training", "epochs", "epochs"),
                              ("architecture", "classes", "class models")):
        value = getattr(card, table).get(key)
        if value is not None:
            parts.append(f"{value} {words}")
    if "batch_size" in card.training:
        parts.append(f"batches of {card.training['batch_size']}")
    data = ", ".join(f"{key} {value}" for key, value in card.data.items())
    return ", ".join(parts) + (f"; data: {data}" if data else "")


def describe_estimate(estimate: TrainingEstimate) -> str:
    """How long, and how the number was made.

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> c = Calibration("training VAE", 14070, 2, 1.25, (0.02, 0.02, 0.03))
    >>> print(describe_estimate(TrainingEstimate(load_card("mnist-vae"), 14070, (282.6, 423.3), c)))
    4.7-7.1 min here (measured: 3 steps of 14,070 timed at 0.020 s median, 0.025 s slow; 1.2 s to start; final evaluation not timed; the card records 121 s)
    """
    card, measured = estimate.card, estimate.calibration
    recorded = card.expected.get("training_seconds_2_cpu_cores")
    recorded_text = f"; the card records {recorded} s" if recorded is not None else ""
    if estimate.seconds is None:
        return f"time not measured ({measured.note}){recorded_text}"
    if measured.completed_seconds is not None:
        return f"{format_range(*estimate.seconds)} here (measured: the whole training ran once to time it){recorded_text}"
    steps = measured.step_seconds
    slow = _slow_step(steps)
    return (f"{format_range(*estimate.seconds)} here (measured: {len(steps)} steps of {estimate.total_steps:,} "
            f"timed at {statistics.median(steps):.3f} s median, {slow:.3f} s slow; "
            f"{measured.overhead_seconds:.1f} s to start; final evaluation not timed"
            f"{'; ' + measured.load if measured.load else ''}{recorded_text})")


# --------------------------------------------------------------------------- the notices


def missing_cards(cards: Iterable[ModelCard | str], cache=None) -> list[ModelCard]:
    """The cards (pinned, as :func:`~ppl_audit.training.load_model` pins them) whose weights are not cached.

    Only the file's presence is checked: an entry that proves corrupt is rebuilt by ``load_model``,
    whose hook then announces it.

    Examples
    --------
    >>> import tempfile
    >>> [c.name for c in missing_cards(["mnist-vae"], cache=tempfile.mkdtemp())]
    ['mnist-vae']
    """
    root, missing = cache_dir(cache), []
    for item in cards:
        card = as_card(item)
        trainer = get_trainer(card.kind)
        card = trainer.pin(card) if trainer.pin is not None else card
        if not card.cache_path(root).exists() and card.recipe_hash not in {c.recipe_hash for c in missing}:
            missing.append(card)
    return missing


@dataclass
class TrainingNotices:
    """The command line's hook before training: a notice with a measured estimate, or a refusal.

    Parameters
    ----------
    write : callable
        Receives each line of a notice (the command line writes them to stderr).
    refuse : bool
        ``--no-train``: a missing model is a one-line :class:`~ppl_audit.errors.WeightsError`.
    hints : dict
        ``card name -> words`` on how a command can do without that card (a flag to drop).
    planned : sequence
        Cards (names or paths) the command will load: the first notice lists every one of them that is
        missing, so that a command needing two models names both before training the first.
    estimate : callable
        :func:`estimate_training` (tests pass a stand-in).
    way_out : bool
        Say how to avoid the training (not for ``ppl-audit train``, whose point it is).

    Examples
    --------
    >>> lines = []
    >>> notices = TrainingNotices(lines.append, estimate=lambda card, **kw: TrainingEstimate(card, 0, None,
    ...                           Calibration(note="a stand-in")))
    >>> from ppl_audit.cards import load_card
    >>> notices.announce([load_card("mnist-vae")], cache="/tmp/nowhere")
    >>> print(lines[0])
    ppl-audit: notice: 1 model is not in the cache /tmp/nowhere and will be trained first (Ctrl-C stops it):
    """

    write: Callable[[str], None]
    refuse: bool = False
    hints: Mapping[str, str] = field(default_factory=dict)
    planned: Sequence[str | ModelCard] = ()
    estimate: Callable[..., TrainingEstimate] = estimate_training
    way_out: bool = True
    announced: set[str] = field(default_factory=set)

    def announce(self, cards: Sequence[ModelCard], *, cache=None, data_dir=None, device="auto",
                 again: bool = False) -> None:
        """Say, before any of them trains, which of ``cards`` will be trained and what each costs.

        ``again``: the first card's cache entry exists but is trained again (``--retrain``, or an
        entry found unusable).
        """
        cards = [c for c in cards if c.recipe_hash not in self.announced]
        if not cards:
            return
        if self.refuse:
            raise self._refusal(cards[0], cache)
        # Every estimate before the first line: an error while calibrating (missing data) stays one line.
        estimates = [self.estimate(card, data_dir=data_dir, device=device, cache=cache) for card in cards]
        where, many = cache_dir(cache), len(cards) > 1
        self.write(f"ppl-audit: notice: {len(cards)} model{'s' if many else ''} will be trained again into the cache "
                   f"{where} (Ctrl-C stops it):" if again else
                   f"ppl-audit: notice: {len(cards)} model{'s are' if many else ' is'} not in the cache {where} "
                   "and will be trained first (Ctrl-C stops it):")
        for card, estimate in zip(cards, estimates):
            self.announced.add(card.recipe_hash)
            self.write(f"  {card.name} ({describe_card(card)}): {describe_estimate(estimate)}")
            if self.way_out:
                self.write(f"    to avoid: {self._way_out(card)}")

    def __call__(self, trainer: Trainer, card: ModelCard, *, path: Path, cache=None, data_dir=None,
                 device="auto") -> None:
        """The :func:`~ppl_audit.training.before_training` hook: announce ``card`` (and the planned cards that
        are missing too, the first time) unless already done."""
        cache = path.parent if cache is None else cache
        planned, self.planned = _missing_planned(self.planned, cache), ()
        cards = [card] + [c for c in planned if c.recipe_hash != card.recipe_hash]
        self.announce(cards, cache=cache, data_dir=data_dir, device=device, again=path.exists())

    def _way_out(self, card: ModelCard) -> str:
        hint = self.hints.get(card.name) or self.hints.get(card.source)  # named, or by its path
        return (f"`ppl-audit train {_card_argument(card)}` builds it ahead; --no-train makes a missing model "
                "an error" + (f"; {hint}" if hint else ""))

    def _refusal(self, card: ModelCard, cache) -> WeightsError:
        hint = self.hints.get(card.name) or self.hints.get(card.source)  # named, or by its path
        return WeightsError(f"{card.name} is not in the cache {cache_dir(cache)} and --no-train forbids training it; "
                            f"`ppl-audit train {_card_argument(card)}` builds it" + (f"; or {hint}" if hint else ""))


def _missing_planned(planned: Sequence[str | ModelCard], cache) -> list[ModelCard]:
    """:func:`missing_cards` of the planned cards, leaving out any that cannot be read: the command names
    that error itself, in its own order, when it loads the card."""
    missing = []
    for item in planned:
        try:
            missing += missing_cards([item], cache)
        except PplAuditError:
            continue
    return missing


def _card_argument(card: ModelCard) -> str:
    """What ``ppl-audit train`` needs to find the card: its file when it came from one, else its name."""
    return card.source if card.source and Path(card.source).is_file() else card.name


def cost_notices(write: Callable[[str], Any], *, refuse: bool = False, hints: Mapping[str, str] | None = None,
                 planned: Sequence[str | ModelCard] = (), way_out: bool = True) -> TrainingNotices:
    """A :class:`TrainingNotices` with the real estimate (the command line's one constructor).

    :func:`estimate_training` is looked up when called, so that a test can replace it.
    """
    return TrainingNotices(write, refuse=refuse, hints=dict(hints or {}), planned=tuple(planned),
                           estimate=lambda card, **where: estimate_training(card, **where), way_out=way_out)


__all__ = [
    "CALIBRATION_MAX_SECONDS",
    "CALIBRATION_MIN_STEPS",
    "CALIBRATION_SECONDS",
    "Calibration",
    "TrainingEstimate",
    "TrainingNotices",
    "WARMUP_STEPS",
    "calibrate",
    "cost_notices",
    "describe_card",
    "describe_estimate",
    "estimate_training",
    "extrapolate",
    "format_range",
    "missing_cards",
]
