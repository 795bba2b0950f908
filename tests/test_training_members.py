"""Cards whose members train apart (a GAN ensemble): a member trained alone, cached on its own, and the
members joined give the whole training's weights byte for byte; a fan-out trains each member once and
resumes where it stopped."""

from __future__ import annotations

import logging

import pytest
import torch

from ppl_audit.cards import load_card
from ppl_audit.errors import InvalidInputError, WeightsError
from ppl_audit.generative.gan_ensemble import train_gan_ensemble
from ppl_audit.training import load_model, members_on, train_member
from ppl_audit.training.members import member_path, train_from_members

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"architecture": {"members": 2, "channels": 4, "critic_channels": 4},
        "data": {"train_split": "test", "num_train": 100, "num_test": 100},
        "training": {"epochs": 1, "batch_size": 25, "critic_steps": 2, "finetune_critic_steps": 3}}
CARD = load_card("mnist-gan-ensemble").with_overrides(**TINY)


class Recorder:
    """A ``map_members`` that trains here and remembers which members it was handed."""

    def __init__(self):
        self.calls = []

    def __call__(self, card, ks, **where):
        self.calls.append(list(ks))
        for k in ks:
            train_member(card, k, **where)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _without_seconds(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "seconds"}


@pytest.fixture(scope="module")
def whole(mnist_fixture_dir):
    return train_gan_ensemble(CARD, data_dir=mnist_fixture_dir, device="cpu")


def test_members_trained_apart_join_into_the_whole_training_byte_for_byte(whole, tmp_path, mnist_fixture_dir):
    joined = train_from_members(CARD, Recorder(), cache=tmp_path, data_dir=mnist_fixture_dir, device="cpu")
    assert _same_weights(joined.module, whole.module)
    assert _without_seconds(joined.metrics) == _without_seconds(whole.metrics)
    assert joined.history == whole.history
    for k in range(2):  # each member has its own cache entry beside the card's
        assert member_path(CARD, tmp_path, k, 2).is_file()
        assert member_path(CARD, tmp_path, k, 2).with_suffix(".json").is_file()


def test_load_model_trains_each_member_once_and_resumes_after_an_interruption(whole, tmp_path, mnist_fixture_dir):
    recorder = Recorder()
    with members_on(recorder):
        trained = load_model(CARD, cache=tmp_path, data_dir=mnist_fixture_dir, device="cpu")
    assert recorder.calls == [[0, 1]] and _same_weights(trained.module, whole.module)
    # a fan-out stopped after member 1: the card's entry never written, member 2's missing
    CARD.cache_path(tmp_path).unlink()
    member_path(CARD, tmp_path, 1, 2).unlink()
    with members_on(recorder):
        again = load_model(CARD, cache=tmp_path, data_dir=mnist_fixture_dir, device="cpu")
    assert recorder.calls[-1] == [1] and _same_weights(again.module, whole.module)
    with members_on(recorder):  # --retrain trains every member again
        load_model(CARD, cache=tmp_path, data_dir=mnist_fixture_dir, device="cpu", retrain=True)
    assert recorder.calls[-1] == [0, 1]


def test_a_corrupt_member_entry_is_trained_again_with_a_warning(whole, tmp_path, mnist_fixture_dir, caplog):
    train_member(CARD, 0, cache=tmp_path, data_dir=mnist_fixture_dir, device="cpu")
    path = member_path(CARD, tmp_path, 0, 2)
    path.write_bytes(path.read_bytes()[:-7] + b"garbage")
    recorder = Recorder()
    with caplog.at_level(logging.WARNING):
        joined = train_from_members(CARD, recorder, cache=tmp_path, data_dir=mnist_fixture_dir, device="cpu")
    assert recorder.calls == [[0, 1]] and "cached member 1 of mnist-gan-ensemble is unusable" in caplog.text
    assert _same_weights(joined.module, whole.module)


def test_members_a_fan_out_did_not_write_are_named_with_the_cache(tmp_path, mnist_fixture_dir):
    with pytest.raises(WeightsError, match=r"member 1 of mnist-gan-ensemble is not in the cache .* shared path"):
        train_from_members(CARD, lambda card, ks, **where: None, cache=tmp_path, data_dir=mnist_fixture_dir,
                           device="cpu")


@pytest.mark.parametrize("k", [-1, 2, True, "0"])
def test_a_member_that_is_not_one_is_refused(k, tmp_path):
    with pytest.raises(InvalidInputError, match=r"member .* of mnist-gan-ensemble must be in 0..1"):
        train_member(CARD, k, cache=tmp_path)


def test_a_card_that_trains_its_members_together_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="'vae-ensemble' trains its members together"):
        train_member(load_card("mnist-vae-ensemble"), 0, cache=tmp_path)
    with pytest.raises(InvalidInputError, match=r"mnist-class-vae trains its members together; \[training\] "
                                                 "members_apart = true"):
        train_member(load_card("mnist-class-vae"), 0, cache=tmp_path)
