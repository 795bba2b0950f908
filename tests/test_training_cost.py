"""Commands say what training a missing model will cost before it starts (issue 25).

A stepping toy trainer stands in for the real ones, so that nothing trains for real; a fake clock
makes the measured step times exact.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from ppl_audit import cli, training
from ppl_audit.cards import TRAINER_VERSIONS, load_card
from ppl_audit.errors import AuditFileError
from ppl_audit.training import Trainer, TrainResult, cost, registry
from ppl_audit.training.cost import Calibration, TrainingEstimate, TrainingNotices

STEPS = 40  # the toy's whole training, in steps

TOY_CARD = """
[model]
name = "stepper"
kind = "stepper"
description = "a linear map trained in 40 counted steps"

[architecture]
width = 3

[data]
dataset = "none"

[training]
epochs = 4
batch_size = 10
seed = 0
"""


class FakeClock:
    """``perf_counter`` that moves only when told to: each toy step takes exactly ``step`` seconds."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Stepper:
    """A trainer that reports ``STEPS`` steps; ``events`` records each run and whether it was stopped."""

    def __init__(self, clock: FakeClock, events: list, *, start=1.0, step=0.05, fail=None):
        self.clock, self.events, self.start, self.step, self.fail = clock, events, start, step, fail

    def build(self, card):
        return nn.Linear(card.architecture["width"], 1)

    def train(self, card, *, data_dir=None, device="auto", progress=None):
        self.events.append("train")
        if self.fail is not None:
            raise self.fail
        torch.rand(3)  # touches the global generator: a calibration must leave it as it was
        self.clock.now += self.start  # "loading data"
        for done in range(1, STEPS + 1):
            self.clock.now += self.step
            if progress is not None:
                progress("training stepper", done, STEPS)
        self.events.append("trained")
        return TrainResult(nn.Linear(card.architecture["width"], 1), {"seconds": 0.0})


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(cost, "_clock", fake)
    return fake


@pytest.fixture
def stepper(monkeypatch, clock):
    """Register the stepping toy for one test (the registry and TRAINER_VERSIONS are restored after)."""
    events: list = []
    toy = Stepper(clock, events)
    monkeypatch.setitem(TRAINER_VERSIONS, "stepper", 1)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    training.register_trainer(Trainer("stepper", toy.build, toy.train, headline=("seconds", "seconds")))
    return toy


@pytest.fixture
def card_file(tmp_path):
    path = tmp_path / "stepper.toml"
    path.write_text(TOY_CARD)
    return path


class StderrRecorder:
    """Stands in for ``sys.stderr`` and interleaves what is written with the trainer's own events."""

    def __init__(self, events: list):
        self.events = events

    def write(self, text: str) -> int:
        if text.strip():
            self.events.append(text)
        return len(text)

    def flush(self):
        pass


def assert_user_error(status, err, *needles):
    """Exit status 2 and exactly one line ``ppl-audit: error: ...`` on stderr that names the problem."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("ppl-audit: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


# --------------------------------------------------------------------------- the extrapolation


def test_extrapolate_known_inputs():
    # median 0.1 s, 75th percentile 0.125 s, mean 0.125 s; 100 steps and 2 s of overhead
    assert cost.extrapolate([0.1, 0.1, 0.2, 0.1], total_steps=100, overhead_seconds=2.0) == pytest.approx((12.0, 14.5))
    assert cost.extrapolate([0.25] * 7, total_steps=1000) == pytest.approx((250.0, 250.0))


def test_extrapolate_high_end_pays_the_mean_of_a_few_very_slow_steps():
    low, high = cost.extrapolate([0.1] * 9 + [2.0], total_steps=10)
    assert low == pytest.approx(1.0)
    assert high == pytest.approx(10 * (0.9 + 2.0) / 10)  # the mean, above the 75th percentile (0.1)


@pytest.mark.parametrize("steps, total", [([], 10), ([0.1, 0.0], 10), ([0.1], -1)])
def test_extrapolate_refuses_what_it_cannot_extrapolate(steps, total):
    with pytest.raises(ValueError):
        cost.extrapolate(steps, total_steps=total)


# --------------------------------------------------------------------------- the calibration


def test_calibration_times_steps_stops_the_run_and_leaves_the_rng_alone(stepper, card_file):
    state = torch.get_rng_state()
    measured = cost.calibrate(load_card(card_file), seconds=0.49, min_steps=5)  # 0.49: float sums
    assert stepper.events == ["train"]  # stopped before the end: nothing "trained"
    assert torch.equal(torch.get_rng_state(), state)
    assert measured.task == "training stepper" and measured.task_steps == STEPS
    # 10 x 0.05 s reach the 0.49 s wanted; the first quarter of them (2) settles and counts as overhead
    assert measured.warmup_steps == cost.WARMUP_STEPS + 2
    assert measured.step_seconds == pytest.approx((0.05,) * 8)
    assert measured.overhead_seconds == pytest.approx(1.0 + 4 * 0.05)  # start-up, warm-up and settling steps


def test_estimate_is_positive_seconds_from_the_measured_rate(stepper, card_file):
    estimate = cost.estimate_training(load_card(card_file), calibrate_fn=lambda card, **kw: cost.calibrate(
        card, seconds=0.5, min_steps=5, **kw))
    truth = 1.0 + STEPS * 0.05  # the toy's whole run on the fake clock
    assert estimate.total_steps == STEPS
    assert estimate.seconds[0] > 0 and estimate.seconds == pytest.approx((truth, truth))


def test_a_run_shorter_than_the_calibration_is_timed_whole(stepper, card_file):
    estimate = cost.estimate_training(load_card(card_file))  # 2 s of steps wanted; its 38 after warm-up take 1.9 s
    assert stepper.events == ["train", "trained"]
    assert estimate.seconds == pytest.approx((3.0, 3.0))
    assert "the whole training ran once" in cost.describe_estimate(estimate)


def test_total_steps_hook_scales_the_timed_task(stepper, card_file, monkeypatch):
    trainer = registry.get_trainer("stepper")
    monkeypatch.setitem(registry._REGISTRY, "stepper", Trainer(
        "stepper", trainer.build, trainer.train, headline=trainer.headline,
        total_steps=lambda card, timed: 5 * timed))  # five members trained one after another
    fake = Calibration("training stepper", STEPS, 2, 1.0, (0.05,) * 10)
    estimate = cost.estimate_training(load_card(card_file), calibrate_fn=lambda card, **kw: fake)
    assert estimate.total_steps == 5 * STEPS
    assert estimate.seconds == pytest.approx((1.0 + (5 * STEPS - 2) * 0.05,) * 2)


def test_the_gan_ensemble_counts_every_member_and_its_fine_tuning():
    card = load_card("mnist-gan-ensemble")
    assert registry.get_trainer("gan-ensemble").total_steps(card, 2811) == 5 * (2811 + 500)


# --------------------------------------------------------------------------- the notices


def _fake_estimate(card, **where):
    return TrainingEstimate(card, 100, (240.0, 300.0), Calibration("t", 100, 2, 1.0, (2.4,) * 5))


def test_the_first_notice_names_every_planned_card_that_is_missing(tmp_path):
    lines = []
    notices = TrainingNotices(lines.append, estimate=_fake_estimate, planned=("mnist-gan-ensemble", "no-such-card"),
                              hints={"mnist-gan-ensemble": "leave out --gan-ensemble"})
    vae = load_card("mnist-vae-ensemble")
    notices(registry.get_trainer(vae.kind), vae, path=vae.cache_path(tmp_path), cache=tmp_path)
    text = "\n".join(lines)
    assert lines[0].startswith(f"ppl-audit: notice: 2 models are not in the cache {tmp_path}")
    assert "mnist-vae-ensemble (vae-ensemble, 5 members, 12 epochs" in text
    assert "mnist-gan-ensemble (gan-ensemble, 5 members, 3 epochs" in text and "leave out --gan-ensemble" in text
    assert "4.0-5.0 min here" in text and "`ppl-audit train mnist-vae-ensemble`" in text
    lines.clear()
    gan = load_card("mnist-gan-ensemble")
    notices(registry.get_trainer(gan.kind), gan, path=gan.cache_path(tmp_path), cache=tmp_path)
    assert lines == []  # announced once, before the first training


def test_cli_notice_comes_before_training_and_not_when_cached(stepper, card_file, tmp_path, monkeypatch):
    events = stepper.events
    monkeypatch.setattr(sys, "stderr", StderrRecorder(events))
    monkeypatch.setattr(cost, "estimate_training", _fake_estimate)  # the notice's estimate is tested above
    argv = ["train", str(card_file), "--cache-dir", str(tmp_path / "empty"), "--no-report", "--device", "cpu"]
    quiet = [*argv, "--quiet"]
    assert cli.main(quiet) == 0 and not [e for e in events if "notice" in e]  # `train --quiet`: asked for, quiet
    events.clear()
    argv[3] = str(tmp_path / "empty2")
    assert cli.main(argv) == 0
    notice = [i for i, e in enumerate(events) if "notice" in e]
    assert notice and notice[0] < events.index("train"), events
    assert "stepper (stepper, 4 epochs, batches of 10; data: dataset none)" in "".join(events)
    assert "to avoid" not in "".join(events)  # `train` is the way out itself
    events.clear()
    assert cli.main(argv) == 0
    assert events == []  # cached: no notice, no training


def test_no_train_makes_a_missing_model_a_one_line_error(stepper, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((28, 28), dtype=np.float32))
    status = cli.main(["ood", str(folder), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "empty"),
                       "--no-train", "--gan-ensemble", "mnist-gan-ensemble", "--reference", "0", "--device", "cpu"])
    _, err = capsys.readouterr()
    assert_user_error(status, err, "mnist-vae-ensemble is not in the cache", "--no-train",
                      "`ppl-audit train mnist-vae-ensemble`")
    assert stepper.events == []


def test_an_error_while_calibrating_is_one_line(stepper, card_file, tmp_path, capsys):
    stepper.fail = AuditFileError("stepper.toml: data folder 'none' not found")
    status = cli.main(["train", str(card_file), "--cache-dir", str(tmp_path), "--no-report", "--device", "cpu"])
    _, err = capsys.readouterr()
    assert_user_error(status, err, "data folder 'none' not found")
    assert stepper.events == ["train"]  # the calibration's run, which failed first
