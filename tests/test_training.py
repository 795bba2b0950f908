"""The card -> train -> cache mechanism, on a toy kind that needs no data, and the training report."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from ppl_audit import training
from ppl_audit.training import registry
from ppl_audit.cache import load_weights, save_weights
from ppl_audit import cards
from ppl_audit.cards import TRAINER_VERSIONS, parse_card
from ppl_audit.errors import AuditFileError, TrainingError, WeightsError
from ppl_audit.report import write_report
from ppl_audit.training import (
    Trainer,
    TrainResult,
    card_config,
    check_expected,
    check_field,
    get_trainer,
    load_model,
    registered_kinds,
    training_report,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TOY_CARD = """
[model]
name = "toy"
kind = "toy"
description = "a linear map trained on nothing"

[architecture]
width = 3

[data]

[training]
seed = 0

[expected]
min_score = 0.5
"""


@dataclass(frozen=True)
class ToyConfig:
    width: int = 2
    seed: int = 0

    def __post_init__(self):
        check_field(isinstance(self.width, int) and self.width > 0, "width", self.width, "a positive integer")


class Toy:
    """A trainer that counts its calls; ``score`` goes in the metrics."""

    def __init__(self, score=1.0):
        self.calls = 0
        self.score = score

    def build(self, card):
        config = card_config(ToyConfig, card, ("architecture", "training"))
        return nn.Linear(config.width, 1)

    def train(self, card, *, data_dir=None, device="auto", progress=None):
        self.calls += 1
        config = card_config(ToyConfig, card, ("architecture", "training"))
        with training.seeded(config.seed):
            module = nn.Linear(config.width, 1)
        history = {"unit": "epoch", "panels": {"loss": {"train": [3.0, 2.0, 1.5]}}}
        return TrainResult(module.train(), {"score": self.score, "seconds": 0.25}, history)


@pytest.fixture
def toy(monkeypatch):
    """Register the toy kind for one test (the registry and TRAINER_VERSIONS are restored after)."""
    toy = Toy()
    monkeypatch.setitem(TRAINER_VERSIONS, "toy", 1)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    training.register_trainer(Trainer("toy", toy.build, toy.train, headline=("score", "score")))
    return toy


@pytest.fixture
def toy_card(toy):
    return parse_card(TOY_CARD, "toy.toml")


def test_builtin_kinds_are_registered_and_each_has_a_trainer_version():
    assert set(registered_kinds()) >= {"house-rocket-classifier", "lenet-classifier", "vae", "gan"}
    for kind in training.BUILTIN_TRAINERS:
        assert kind in TRAINER_VERSIONS
        assert get_trainer(kind).kind == kind


def test_register_trainer_alone_adds_a_kind(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(cards, "TRAINER_VERSIONS", dict(TRAINER_VERSIONS))
    text = TOY_CARD.replace('kind = "toy"', 'kind = "brand-new"')
    with pytest.raises(AuditFileError, match="kind = 'brand-new' is unknown.*register_trainer adds one"):
        parse_card(text, "new.toml")
    toy = Toy()
    training.register_trainer(Trainer("brand-new", toy.build, toy.train, headline=("score", "score"), version=2))
    card = parse_card(text, "new.toml")
    assert card.recipe["trainer_version"] == 2 and "brand-new" in registered_kinds()
    assert load_model(card, cache=tmp_path, device="cpu").metrics["score"] == toy.score


def test_a_trainer_kind_must_be_a_safe_name(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="a card kind must be a safe name"):
        training.register_trainer(Trainer("../up", lambda c: None, lambda c, **k: None, headline=("a", "b")))


def test_kind_without_trainer_is_an_audit_file_error(monkeypatch):
    monkeypatch.setitem(TRAINER_VERSIONS, "orphan", 1)
    card = parse_card(TOY_CARD.replace('kind = "toy"', 'kind = "orphan"'), "orphan.toml")
    with pytest.raises(AuditFileError, match="no trainer for model kind 'orphan'"):
        load_model(card)


def test_registering_a_second_trainer_for_a_kind_needs_replace(toy):
    other = Trainer("toy", toy.build, toy.train, headline=("score", "score"))
    with pytest.raises(ValueError, match="already registered"):
        training.register_trainer(other)
    assert training.register_trainer(other, replace=True) is get_trainer("toy")


def test_train_then_cache_then_retrain(toy, toy_card, tmp_path):
    first = load_model(toy_card, cache=tmp_path, device="cpu")
    assert toy.calls == 1
    assert first.weights_path == toy_card.cache_path(tmp_path)
    assert not first.module.training  # eval mode
    assert first.info["card"] == "toy" and first.info["recipe_hash"] == toy_card.recipe_hash
    assert first.info["recipe"] == toy_card.recipe
    assert first.metrics == {"score": 1.0, "seconds": 0.25}
    assert first.info["history"]["panels"]["loss"]["train"] == [3.0, 2.0, 1.5]
    state, info = load_weights(first.weights_path)
    assert set(state) == {"weight", "bias"} and info == first.info

    again = load_model(toy_card, cache=tmp_path, device="cpu")
    assert toy.calls == 1  # loaded, not trained
    assert torch.equal(again.module.weight, first.module.weight)
    assert again.info == first.info

    load_model(toy_card, cache=tmp_path, device="cpu", retrain=True)
    assert toy.calls == 2


def test_cache_defaults_to_the_environment_folder(toy, toy_card, cache_root):
    trained = load_model(toy_card, device="cpu")  # conftest points $PPL_AUDIT_CACHE at cache_root
    assert trained.weights_path.parent == cache_root


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def _wrong_tensors_valid_file(path):
    save_weights(path, {"other": torch.zeros(2)}, json.loads(path.with_suffix(".json").read_text())["info"])


def _sidecar_of_another_recipe(path):
    state, info = load_weights(path)
    save_weights(path, state, {**info, "recipe_hash": "0" * 16})


def _edit_sidecar(**changes):
    def edit(path):
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **changes}))
    return edit


@pytest.mark.parametrize("corrupt", [_flip_a_byte, _wrong_tensors_valid_file, _sidecar_of_another_recipe,
                                     _edit_sidecar(sha256=5), _edit_sidecar(sha256=None), _edit_sidecar(info=[1, 2]),
                                     _edit_sidecar(info="text"), lambda p: p.with_suffix(".json").write_text("[1]")],
                         ids=["checksum", "state-dict-mismatch", "other-recipe", "sha256-int", "sha256-null",
                              "info-list", "info-string", "sidecar-list"])
def test_unusable_cache_entry_is_rebuilt_with_a_warning(toy, toy_card, tmp_path, caplog, corrupt):
    first = load_model(toy_card, cache=tmp_path, device="cpu")
    corrupt(first.weights_path)
    with caplog.at_level(logging.WARNING, logger="ppl_audit"):
        rebuilt = load_model(toy_card, cache=tmp_path, device="cpu")
    assert toy.calls == 2
    assert "rebuilding" in caplog.text
    assert torch.equal(rebuilt.module.weight, first.module.weight)  # seeded: the same weights again
    state, info = load_weights(rebuilt.weights_path)  # verifies
    assert info["recipe_hash"] == toy_card.recipe_hash


@pytest.mark.parametrize("score", [0.25, float("nan")], ids=["below", "nan"])
def test_training_below_the_floor_fails_and_caches_nothing(toy, toy_card, tmp_path, score):
    toy.score = score
    with pytest.raises(TrainingError) as raised:
        load_model(toy_card, cache=tmp_path / "cache", device="cpu")
    message = str(raised.value)
    assert "\n" not in message and message.startswith("training of toy missed the card's [expected] bounds")
    assert f"score {score:.6g} is below the card's min_score 0.5" in message  # the metric, the value, the floor
    assert message.endswith("nothing was cached")
    assert isinstance(raised.value, WeightsError)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []  # nor temporaries


def test_training_above_a_max_bound_fails_and_a_met_floor_caches(toy, tmp_path):
    card = parse_card(TOY_CARD.replace("min_score = 0.5", "min_seconds = 0.1\nmax_seconds = 0.2"), "t.toml")
    with pytest.raises(TrainingError, match=r"seconds 0.25 is above the card's max_seconds 0.2"):
        load_model(card, cache=tmp_path, device="cpu")
    assert list(tmp_path.iterdir()) == []
    card = parse_card(TOY_CARD.replace("min_score = 0.5", "min_score = 1.0"), "t.toml")  # bounds are inclusive
    trained = load_model(card, cache=tmp_path, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([trained.weights_path.name,
                                                                 trained.weights_path.with_suffix(".json").name])


def test_a_failed_retraining_keeps_the_cached_entry(toy, toy_card, tmp_path):
    first = load_model(toy_card, cache=tmp_path, device="cpu")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    toy.score = 0.25
    with pytest.raises(TrainingError):
        load_model(toy_card, cache=tmp_path, device="cpu", retrain=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert load_model(toy_card, cache=tmp_path, device="cpu").info == first.info  # loaded, not trained


def test_check_expected_min_max_and_nan(toy):
    card = parse_card(TOY_CARD.replace("min_score = 0.5", "min_score = 0.5\nmax_loss = 2.0"), "t.toml")
    assert check_expected(card, {"score": 0.7, "loss": 1.0}) == []
    assert check_expected(card, {"score": 0.5, "loss": 2.0}) == []  # bounds are inclusive
    problems = check_expected(card, {"score": float("nan"), "loss": 3.0})
    assert len(problems) == 2 and "above the card's max_loss" in problems[1]


def test_card_config_names_unknown_keys_and_bad_values(toy):
    card = parse_card(TOY_CARD.replace("width = 3", "widht = 3"), "typo.toml")
    with pytest.raises(AuditFileError, match=r"typo.toml: unknown key\(s\) \['widht'\] in \[architecture\]"):
        load_model(card)
    card = parse_card(TOY_CARD.replace("width = 3", "width = 0"), "zero.toml")
    with pytest.raises(AuditFileError, match="zero.toml: width must be a positive integer, got 0"):
        load_model(card)


def test_training_report_has_curves_metrics_and_no_wall_clock_in_json(toy, toy_card, tmp_path):
    trained = load_model(toy_card, cache=tmp_path, device="cpu")
    report = training_report(trained)
    assert report.kind == "training"
    assert [s.name for s in report.sections] == ["expectations", "curves"]
    assert report.metrics == {"score": 1.0}
    assert report.timings == {"seconds": 0.25}
    table = report.sections[0].tables[0]
    assert table.rows == [["score", 1.0, ">= 0.5", True]]
    assert report.sections[0].warnings == []
    assert [f.name for f in report.iter_figures()] == ["curve_1"]
    assert report.provenance["recipe_hash"] == toy_card.recipe_hash
    a = write_report(report, tmp_path / "a")
    b = write_report(training_report(load_model(toy_card, cache=tmp_path, device="cpu")), tmp_path / "b")
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()
    assert "seconds" not in (a / "report.json").read_text()
    assert (a / "figures" / "curve_1.png").read_bytes().startswith(b"\x89PNG")


def test_house_rocket_kind_shares_the_cache_with_its_own_loader(tiny_card, tiny_classifier, cache_root, monkeypatch):
    from ppl_audit.classifiers import house_rocket

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the weights are cached")

    monkeypatch.setattr(house_rocket, "train_house_rocket_classifier", no_training)
    trained = load_model(tiny_card, cache=cache_root, device="cpu")
    assert trained.weights_path == tiny_classifier.weights_path
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(torch.softmax(trained.module(x), -1), tiny_classifier.probs(x))
    report = training_report(trained)  # its sidecar has no history: the loss per epoch is drawn instead
    assert [f.name for f in report.iter_figures()] == ["curve_1"]


def test_a_folder_where_the_weights_belong_is_a_clear_error_before_training(toy, toy_card, tmp_path, caplog):
    toy_card.cache_path(tmp_path).mkdir(parents=True)
    (toy_card.cache_path(tmp_path) / "user-file").write_text("kept")
    with caplog.at_level(logging.WARNING, logger="ppl_audit"), \
            pytest.raises(WeightsError, match="is not a file, but ppl-audit keeps"):
        load_model(toy_card, cache=tmp_path, device="cpu")
    assert toy.calls == 0
    assert caplog.text == ""  # the error is the one line: no "rebuilding" warning before it
    assert (toy_card.cache_path(tmp_path) / "user-file").read_text() == "kept"


def test_a_killed_writers_temporary_files_are_cleaned_by_the_next_save(tmp_path):
    import os

    path = tmp_path / "m-0123.safetensors"
    dead = tmp_path / f".{path.name}.tmp-{2 ** 22 + 7}-abc"  # no process can have this pid
    live = tmp_path / f".{path.name}.tmp-{os.getpid()}-abc"
    dead.write_bytes(b"half"), live.write_bytes(b"half")
    save_weights(path, {"w": torch.zeros(2)}, {})
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "m-0123.json", live.name])


def test_a_card_too_large_to_train_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    # 784 x 10^9 hidden weights would need ~50 TB to train; counted on the meta device it costs nothing.
    import ppl_audit.validators as validators

    monkeypatch.setattr(validators, "available_memory_bytes", lambda: 2**30)
    text = (Path(__file__).resolve().parents[1] / "models" / "mnist-lenet5.toml").read_text()
    card = tmp_path / "huge.toml"
    card.write_text(text.replace('name = "mnist-lenet5"', 'name = "huge"').replace("hidden = [120, 84]",
                                                                                       "hidden = [1000000000, 84]"))
    with pytest.raises(AuditFileError, match=r"'huge' \(\d{1,3}(,\d{3})+ parameters\) would need about .* of "
                                             r"memory, but 1 GiB is available; make the card's layers narrower"):
        load_model(card, cache=tmp_path / "cache", device="cpu")
    assert not (tmp_path / "cache").exists()


def test_the_parameter_count_on_the_meta_device_is_the_real_one(toy_card):
    trainer = training.get_trainer(training.as_card(toy_card).kind)
    card = training.as_card(toy_card)
    assert training.check_model_fits(trainer, card) == sum(p.numel() for p in trainer.build(card).parameters())
