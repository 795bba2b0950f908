"""Audit files, model cards and cache sidecars that cannot break it (issue 20, part 4)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from ppl_audit import training
from ppl_audit.training import registry
from ppl_audit.audits import load_audit_file
from ppl_audit.cache import check_sidecar_info, load_weights
from ppl_audit.cards import _shipped_card, load_card, parse_card
from ppl_audit.classifiers.house_rocket import HouseRocketConfig
from ppl_audit.errors import AuditFileError, WeightsError
from ppl_audit.training import load_model
from tests.test_training import TOY_CARD, toy, toy_card  # noqa: F401 - fixtures

SHIPPED = _shipped_card("house-rocket-cnn")


def card_file(tmp_path, text, name="card.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- files that are not TOML


@pytest.mark.parametrize("reader", [load_card, load_audit_file])
def test_toml_nested_a_thousand_deep_is_one_line_audit_file_error(reader, tmp_path):
    path = card_file(tmp_path, "a = " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(AuditFileError, match="not valid TOML: nested too deeply") as info:
        reader(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("reader", [load_card, load_audit_file])
def test_a_binary_file_is_an_audit_file_error(reader, tmp_path):
    path = tmp_path / "card.toml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(AuditFileError, match=r"not valid TOML: not UTF-8 text \(byte 128\)"):
        reader(path)


# --------------------------------------------------------------------------- ill-typed keys


@pytest.mark.parametrize("kind,key,expected", [
    ("levelset", "data_dir", "a string"), ("levelset", "classifier", "a string"), ("ood", "data_dir", "a string"),
    ("gwin", "classifier", "a string"), ("selective", "data_dir", "a string"), ("levelset", "num_steps", "an integer"),
])
def test_audit_file_keys_of_the_wrong_type_name_the_key_and_type(kind, key, expected, tmp_path):
    path = card_file(tmp_path, f'[audit]\nkind = "{kind}"\n{key} = 5.5\n' if expected == "an integer" else
                     f'[audit]\nkind = "{kind}"\n{key} = 5\n', "a.toml")
    with pytest.raises(AuditFileError, match=f"{key} must be {expected}, got 5"):
        load_audit_file(path)


@pytest.mark.parametrize("old,new,needle", [
    ("channels = 16", 'channels = "abc"', r"\[architecture\] channels must be an integer in 1..4096, got 'abc'"),
    ("channels = 16", "channels = 1000000", r"channels must be an integer in 1..4096, got 1000000"),
    ("num_train = 16000", "num_train = inf", r"\[data\] num_train must be an integer in 1..1000000, got inf"),
    ("learning_rate = 0.002", "learning_rate = inf", r"learning_rate must be a number in \(0, 10\], got inf"),
    ("seed = 0", "seed = -1", r"\[training\] seed must be an integer in 0.."),
    ("epochs = 8", "epochs = true", "epochs must be an integer"),
])
def test_house_rocket_card_values_are_range_checked(old, new, needle, tmp_path):
    card = load_card(card_file(tmp_path, SHIPPED.replace(old, new, 1)))
    with pytest.raises(AuditFileError, match=needle):
        HouseRocketConfig.from_card(card)


def test_the_shipped_card_passes_its_own_checks():
    assert HouseRocketConfig.from_card(load_card("house-rocket-cnn")).channels == 16


@pytest.mark.parametrize("old,new,needle", [
    ("min_test_accuracy = 0.97", 'min_test_accuracy = "high"', "min_test_accuracy must be a finite number, got 'high'"),
    ("min_test_accuracy = 0.97", "min_test_accuracy = nan", "min_test_accuracy must be a finite number"),
    ("[expected]", "[expected]\nexpected = [5]", "expected must be a number or a string"),
])
def test_expected_values_are_checked_when_the_card_is_loaded(old, new, needle, tmp_path):
    with pytest.raises(AuditFileError, match=needle):
        load_card(card_file(tmp_path, SHIPPED.replace(old, new, 1)))


def test_an_expected_that_is_not_a_table_is_refused():
    text = TOY_CARD.replace("[expected]\nmin_score = 0.5\n", "").replace("[model]", "expected = 5\n[model]")
    with pytest.raises(AuditFileError, match="unknown table|expected"):
        parse_card(text, "t.toml")


# --------------------------------------------------------------------------- diverged training caches nothing


def test_non_finite_weights_are_never_cached(toy, toy_card, tmp_path, monkeypatch):  # noqa: F811
    def diverged(card, **kwargs):
        module = torch.nn.Linear(3, 1)
        with torch.no_grad():
            module.weight.fill_(float("nan"))
        return training.TrainResult(module, {"score": 0.5})

    monkeypatch.setitem(registry._REGISTRY, "toy", training.Trainer("toy", toy.build, diverged, ("score", "score")))
    with pytest.raises(WeightsError, match=r"training of toy-\w+ ended with non-finite weights \(3 of 3 values of "
                                           r"'weight' are NaN or inf"):
        training.load_model(toy_card, cache=tmp_path, device="cpu")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- sidecars that lie


@pytest.mark.parametrize("edit,needle", [
    ({"metrics": {"score": 1.0, "test_accuracy": 1.5}}, "test_accuracy = 1.5, outside"),
    ({"recipe_hash": "0123456789abcdef"}, "records recipe '0123456789abcdef'"),
    ({"recipe_hash": None}, "records recipe 'None'"),
    ({"metrics": {"score": float("nan")}}, "score = nan, not a finite number"),
    ({"metrics": {"seconds": -1}}, "a negative duration"),
    ({"metrics": [1]}, "'metrics' must be a table"),
])
def test_an_edited_sidecar_is_rebuilt_with_one_warning(edit, needle, toy, toy_card, tmp_path, caplog):  # noqa: F811
    first = training.load_model(toy_card, cache=tmp_path, device="cpu")
    sidecar = first.weights_path.with_suffix(".json")
    doc = json.loads(sidecar.read_text())
    doc["info"].update(edit)
    sidecar.write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match=needle.replace("(", r"\(")):
        check_sidecar_info(load_weights(first.weights_path)[1], toy_card.recipe_hash, first.weights_path)
    with caplog.at_level(logging.WARNING, logger="ppl_audit"):
        rebuilt = training.load_model(toy_card, cache=tmp_path, device="cpu")
    assert toy.calls == 2 and rebuilt.info["metrics"]["score"] == 1.0 and rebuilt.info["recipe_hash"] == toy_card.recipe_hash
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rebuilding" in warnings[0].getMessage()


def test_the_level_set_audit_path_checks_the_sidecar_too(tiny_card, tiny_classifier, cache_root, caplog, monkeypatch):
    import ppl_audit.classifiers.house_rocket as house_rocket

    path = tiny_card.cache_path(cache_root)
    doc = json.loads(path.with_suffix(".json").read_text())
    backup = path.with_suffix(".json").read_text()
    doc["info"]["metrics"]["test_accuracy"] = 1.5
    path.with_suffix(".json").write_text(json.dumps(doc))
    retrained = []

    def retrain(card, device=None, progress=None):
        retrained.append(card)
        raise RuntimeError("retraining")

    monkeypatch.setattr(house_rocket, "train_house_rocket_classifier", retrain)
    try:
        with caplog.at_level(logging.WARNING):
            with pytest.raises(RuntimeError, match="retraining"):
                load_model(tiny_card, cache=cache_root, device="cpu", kind="house-rocket-classifier").model
        assert retrained and "test_accuracy = 1.5, outside [0, 1]" in caplog.text
    finally:
        path.with_suffix(".json").write_text(backup)  # the session's shared tiny classifier stays valid
