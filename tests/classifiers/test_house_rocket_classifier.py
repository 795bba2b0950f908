import json

import pytest
import torch

from ppl_audit.cache import load_weights
from ppl_audit.cards import load_card, parse_card
from ppl_audit.errors import AuditFileError, InvalidInputError, TrainingError, WeightsError
from ppl_audit.priors import HouseRocketWorld
from ppl_audit.training import load_model


def test_tiny_classifier_separates_the_classes(tiny_classifier):
    world = HouseRocketWorld()
    z, c = world.sample_with_class(2000, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        acc = (tiny_classifier.probs(world.decode(z)).argmax(-1) == c).float().mean()
    # 2 epochs on 2,000 renders; the full card reaches ~98% (Bayes-optimal ~98.4%).
    assert acc > 0.9
    assert tiny_classifier.info["metrics"]["test_accuracy"] > 0.9


def test_cached_weights_load_and_verify(tiny_card, tiny_classifier, cache_root):
    path = tiny_card.cache_path(cache_root)
    state, info = load_weights(path)
    assert info["recipe_hash"] == tiny_card.recipe_hash
    again = load_model(tiny_card, cache=str(cache_root), device="cpu", kind="house-rocket-classifier").model
    x = torch.rand(4, 1, 64, 64)
    assert torch.equal(again.probs(x), tiny_classifier.probs(x))


def test_corrupt_weights_are_detected_and_rebuilt(tiny_card, tmp_path):
    clf = load_model(tiny_card, cache=str(tmp_path), device="cpu", kind="house-rocket-classifier").model
    path = tiny_card.cache_path(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        load_weights(path)
    rebuilt = load_model(tiny_card, cache=str(tmp_path), device="cpu", kind="house-rocket-classifier").model
    load_weights(path)  # verifies again
    x = torch.rand(3, 1, 64, 64)
    assert torch.allclose(rebuilt.probs(x), clf.probs(x), atol=1e-5)  # training is seeded


def test_garbage_header_is_an_error_not_an_unpickle(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x80\x04not a safetensors file")
    sidecar = {"sha256": __import__("hashlib").sha256(path.read_bytes()).hexdigest(), "info": {}}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(WeightsError, match="safetensors"):
        load_weights(path)


def test_card_hash_ignores_comments_but_not_recipe():
    card = load_card("house-rocket-cnn")
    assert card.with_overrides(training={"epochs": 8}).recipe_hash == card.recipe_hash
    assert card.with_overrides(training={"epochs": 9}).recipe_hash != card.recipe_hash


@pytest.mark.parametrize(
    "text,message",
    [
        ("[model\n", "not valid TOML"),
        ('[model]\nname="x"\nkind="house-rocket-classifier"\n', "missing table"),
        ('[model]\nname="x"\nkind="nope"\n[architecture]\n[data]\n[training]\n', "kind = 'nope'"),
        ('[model]\nname="x"\nkind="house-rocket-classifier"\n[architecture]\n[data]\n[training]\n[extra]\n', "unknown table"),
    ],
)
def test_malformed_cards(text, message):
    with pytest.raises(AuditFileError, match=message):
        parse_card(text, "card.toml")


@pytest.mark.usefixtures("one_thread")
def test_a_classifier_below_the_cards_floor_fails_and_caches_nothing(tmp_path):
    card = load_card("house-rocket-cnn").with_overrides(data={"num_train": 64, "num_test": 64},
                                                        training={"epochs": 1, "batch_size": 32})
    with pytest.raises(TrainingError) as raised:  # 64 renders, one epoch: far below the shipped 0.97
        load_model(card, cache=str(tmp_path / "cache"), device="cpu", kind="house-rocket-classifier").model
    message = str(raised.value)
    assert "\n" not in message and "test_accuracy 0." in message
    assert "below the card's min_test_accuracy 0.97" in message and message.endswith("nothing was cached")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def _no_training(*args, **kwargs):
    raise AssertionError("trained although the cache destination is unusable")


def test_a_cache_that_is_a_file_is_refused_before_training(tiny_card, tmp_path, monkeypatch):
    from ppl_audit.classifiers import house_rocket

    monkeypatch.setattr(house_rocket, "train_house_rocket_classifier", _no_training)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="weights cache .*file: it exists and is not a folder"):
        load_model(tiny_card, cache=str(tmp_path / "file"), device="cpu", kind="house-rocket-classifier").model


def test_a_folder_where_the_weights_belong_is_refused_and_kept(tiny_card, tmp_path, monkeypatch, caplog):
    from ppl_audit.classifiers import house_rocket

    monkeypatch.setattr(house_rocket, "train_house_rocket_classifier", _no_training)
    folder = tiny_card.cache_path(tmp_path)
    folder.mkdir()
    (folder / "user-file").write_text("kept")
    with caplog.at_level("WARNING", logger="ppl_audit"), \
            pytest.raises(WeightsError, match="is not a file, but ppl-audit keeps house-rocket-cnn's weights there"):
        load_model(tiny_card, cache=str(tmp_path), device="cpu", kind="house-rocket-classifier").model
    assert caplog.text == "" and (folder / "user-file").read_text() == "kept"
