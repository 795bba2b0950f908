"""Per-class generators trained apart (``members_apart``): each class's model alone, on its class, the
same wherever it trains; joined, they are the card's model."""

from __future__ import annotations

import pytest
import torch

from ppl_audit.errors import AuditFileError
from ppl_audit.generative.class_generators import ClassGANConfig
from ppl_audit.generative.class_members import (
    GAN_TRAINER,
    VAE_TRAINER,
    train_class_gan_card,
    train_class_gan_member,
    train_class_vae_card,
)
from ppl_audit.training import DataConfig, load_model, load_training_data, members_on, train_member
from ppl_audit.training.members import train_from_members
from tests.conftest import FIXTURE_DATA

pytestmark = pytest.mark.usefixtures("one_thread")


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _fan_out(card, ks, **where):
    for k in reversed(list(ks)):  # in any order
        train_member(card, k, **where)


@pytest.mark.parametrize("name, train", [("mnist-class-vae", train_class_vae_card),
                                         ("mnist-class-gan", train_class_gan_card)])
def test_classes_trained_apart_anywhere_give_the_weights_of_training_them_in_turn(name, train, tiny_mnist_card,
                                                                                   tmp_path):
    card = tiny_mnist_card(name, training={"members_apart": True})
    in_turn = train(card, data_dir=FIXTURE_DATA, device="cpu")
    fanned = train_from_members(card, _fan_out, cache=tmp_path, data_dir=FIXTURE_DATA, device="cpu")
    assert _same_weights(fanned.module, in_turn.module)
    assert {k: v for k, v in fanned.metrics.items() if k != "seconds"} == \
           {k: v for k, v in in_turn.metrics.items() if k != "seconds"}
    assert fanned.history == in_turn.history
    assert card.recipe_hash != tiny_mnist_card(name).recipe_hash  # another recipe than the batched training


def test_each_class_model_is_trained_and_judged_on_its_own_class(tiny_mnist_card):
    card = tiny_mnist_card("mnist-class-gan", training={"members_apart": True})
    train, test = load_training_data(DataConfig.from_card(card), FIXTURE_DATA, "cpu")
    for c in (0, 7):
        member = train_class_gan_member(card, c, data_dir=FIXTURE_DATA, device="cpu")
        assert member.metrics["num_train"] == int((train.labels == c).sum()) > 0
        assert member.metrics["num_test"] == int((test.labels == c).sum()) > 0
        assert member.module.num_members == 1


def test_members_apart_must_be_a_boolean(tiny_mnist_card):
    with pytest.raises(AuditFileError, match="mnist-class-gan.toml: members_apart must be true or false, got 'yes'"):
        ClassGANConfig.from_card(tiny_mnist_card("mnist-class-gan", training={"members_apart": "yes"}))


def test_the_cost_estimate_counts_every_class_when_they_train_apart(tiny_mnist_card):
    together, apart = tiny_mnist_card("mnist-class-vae"), tiny_mnist_card("mnist-class-vae", training={"members_apart": True})
    assert VAE_TRAINER.total_steps(together, 40) == 40 and VAE_TRAINER.total_steps(apart, 40) == 400
    gan_together = tiny_mnist_card("mnist-class-gan")
    gan_apart = tiny_mnist_card("mnist-class-gan", training={"members_apart": True})
    assert GAN_TRAINER.members.count(gan_together) == 0 and GAN_TRAINER.members.count(gan_apart) == 10


def test_load_model_sends_every_class_of_an_apart_card_to_the_fan_out(tiny_mnist_card, tmp_path):
    card = tiny_mnist_card("mnist-class-vae", training={"members_apart": True})
    handed = []

    def fan_out(card, ks, **where):
        handed.append(list(ks))
        _fan_out(card, ks, **where)

    with members_on(fan_out):
        trained = load_model(card, cache=tmp_path, data_dir=FIXTURE_DATA, device="cpu")
    assert handed == [list(range(10))] and trained.metrics["classes"] == 10
    together = tiny_mnist_card("mnist-class-vae")
    with members_on(fan_out):  # a card that trains its classes together trains whole, as before
        load_model(together, cache=tmp_path, data_dir=FIXTURE_DATA, device="cpu")
    assert handed == [list(range(10))]
