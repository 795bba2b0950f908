"""Per-class generators: class batches, the batched per-class GAN and penalty, tiny training runs."""

from __future__ import annotations

import pytest
import torch

from ppl_audit.cards import load_card
from ppl_audit.errors import InvalidInputError
from ppl_audit.generative.class_generators import (
    ClassGAN,
    ClassGANConfig,
    ClassVAEConfig,
    ParameterAverage,
    build_class_gan,
    build_class_vae,
    class_batches,
    class_gradient_penalty,
    class_indices,
    own_class_elbo,
)
from ppl_audit.generative.vae_ensemble import VAEEnsemble
from ppl_audit.training import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_batch_row_holds_one_class_and_no_image_repeats_before_all_are_used():
    labels = torch.tensor([0, 1, 2] * 7 + [1])  # class sizes 7, 8, 7
    rows = torch.stack(list(class_batches(labels, 3, 3, 2, torch.Generator().manual_seed(0))), dim=1)  # (3, 2, 3)
    assert rows.shape == (3, 2, 3)
    for c in range(3):
        used = rows[c].flatten()
        assert bool((labels[used] == c).all())
        assert len(set(used.tolist())) == 6  # 6 draws from at least 7 images: no repeats


def test_a_class_smaller_than_an_epoch_is_cycled_through_fresh_orders():
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1])
    row = torch.stack(list(class_batches(labels, 2, 2, 3, torch.Generator().manual_seed(1))), dim=1)[0].flatten()
    assert sorted(row[:2].tolist()) == [0, 1] and sorted(row[2:4].tolist()) == [0, 1]


def test_a_class_without_images_is_refused():
    with pytest.raises(InvalidInputError, match=r"classes \[1\] have no training images"):
        class_indices(torch.tensor([0, 2, 2]), 3)


def test_class_gan_members_are_independent_and_match_their_own_slices():
    gan = ClassGAN(3, 4, (8,), (8,), seed=0)
    z = torch.randn(3, 5, 4)
    out = gan.decode_flat(z)
    # class 1's generator by hand from its weight slices
    h = torch.nn.functional.leaky_relu(z[1] @ gan.generator[0].weight[1].T + gan.generator[0].bias[1], 0.2)
    by_hand = torch.sigmoid(h @ gan.generator[2].weight[1].T + gan.generator[2].bias[1])
    torch.testing.assert_close(out[1], by_hand)
    x = torch.rand(3, 6, 784)
    before = gan.critic(x)
    x[2] = torch.rand(6, 784)
    after = gan.critic(x)
    torch.testing.assert_close(before[:2], after[:2])  # changing class 2's images leaves classes 0 and 1 alone
    assert not torch.allclose(before[2], after[2])


def test_batched_gradient_penalty_equals_each_class_computed_alone():
    gan = ClassGAN(2, 3, (8,), (8,), seed=0)
    real, fake = torch.rand(2, 5, 784), torch.rand(2, 5, 784)
    batched = class_gradient_penalty(gan, real, fake, torch.Generator().manual_seed(0))
    eps = torch.rand(2, 5, 1, generator=torch.Generator().manual_seed(0))
    for c in range(2):
        x_hat = (eps[c] * real[c] + (1 - eps[c]) * fake[c]).requires_grad_(True)
        full = torch.zeros(2, 5, 784)
        full[c] = x_hat
        values = gan.critic(full)[c]
        (grad,) = torch.autograd.grad(values.sum(), x_hat)
        torch.testing.assert_close(batched[c], (grad.norm(dim=1) - 1).square().mean())


def test_own_class_elbo_reads_each_vae_on_its_own_class_only():
    vae = VAEEnsemble(2, 2, (8,), seed=0)
    x = torch.rand(4, 1, 28, 28)
    labels = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        elbo = vae.elbo(x, generator=torch.Generator().manual_seed(1))
    got = own_class_elbo(vae, x, labels)
    assert got == pytest.approx([float(elbo[0, [0, 3]].double().mean()), float(elbo[1, [1, 2]].double().mean())],
                                rel=1e-6)


@pytest.mark.parametrize("cls,kwargs,message", [
    (ClassVAEConfig, {"classes": 1}, "classes must be an integer >= 2"),
    (ClassVAEConfig, {"hidden": ()}, "hidden must be a non-empty list"),
    (ClassGANConfig, {"critic_hidden": (0,)}, "critic_hidden must be a non-empty list"),
    (ClassGANConfig, {"beta1": 1.0}, r"beta1 must be a number in \[0, 1\)"),
    (ClassGANConfig, {"gradient_penalty": -1}, "gradient_penalty must be a number >= 0"),
    (ClassGANConfig, {"generator_ema_decay": 1.0}, r"generator_ema_decay must be a number in \[0, 1\)"),
    (ClassGANConfig, {"generator_ema_decay": -0.1}, r"generator_ema_decay must be a number in \[0, 1\)"),
])
def test_config_errors_name_the_field(cls, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        cls(**kwargs)


def test_loading_another_kind_of_card_is_refused():
    needed = "a 'class-vae' or 'class-gan' model card is needed; 'mnist-vae' is of kind 'vae'"
    with pytest.raises(InvalidInputError, match=needed):
        load_model("mnist-vae", kind=("class-vae", "class-gan"))


def test_shipped_cards_build_the_papers_latent_sizes():
    assert build_class_vae(load_card("mnist-class-vae")).latent_dim == 10
    assert build_class_gan(load_card("mnist-class-gan")).latent_dim == 15


@pytest.mark.parametrize("name", ["mnist-class-vae", "mnist-class-gan"])
def test_tiny_training_is_seeded_and_reports_per_class_metrics(name, tiny_mnist_card, mnist_fixture_dir):
    from ppl_audit.training import get_trainer

    card = tiny_mnist_card(name)
    trainer = get_trainer(card.kind)
    first = trainer.train(card, data_dir=mnist_fixture_dir, device="cpu")
    second = trainer.train(card, data_dir=mnist_fixture_dir, device="cpu")
    key = "test_elbo_nats" if name == "mnist-class-vae" else "test_critic_gap"
    assert len(first.metrics[f"{key}_per_class"]) == 10
    assert first.metrics[key] == second.metrics[key]
    for a, b in zip(first.module.state_dict().values(), second.module.state_dict().values()):
        assert torch.equal(a, b)


def test_parameter_average_is_the_exponentially_weighted_sum_of_the_iterates():
    layer = torch.nn.Linear(2, 1)
    start = [p.detach().clone() for p in layer.parameters()]
    average = ParameterAverage(layer, decay=0.8)
    iterates = []
    for k in range(3):
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(float(k + 1))
        iterates.append([p.detach().clone() for p in layer.parameters()])
        average.update(layer)
    # avg_3 = 0.8^3 theta_0 + 0.2 (0.8^2 theta_1 + 0.8 theta_2 + theta_3)
    for i, got in enumerate(average.shadow):
        expected = 0.8 ** 3 * start[i] + 0.2 * (0.64 * iterates[0][i] + 0.8 * iterates[1][i] + iterates[2][i])
        torch.testing.assert_close(got, expected)
    target = torch.nn.Linear(2, 1)
    average.copy_to(target)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), average.shadow))


def test_parameter_average_refuses_a_decay_outside_the_unit_interval():
    with pytest.raises(InvalidInputError, match=r"decay must be a number in \[0, 1\), got 1.0"):
        ParameterAverage(torch.nn.Linear(1, 1), 1.0)


def test_averaged_training_keeps_the_average_of_the_generator_steps_and_leaves_the_critic(
        tiny_mnist_card, mnist_fixture_dir):
    from ppl_audit.generative.class_generators import train_class_gan

    card = tiny_mnist_card("mnist-class-gan", training={"generator_ema_decay": 0.7})
    plain_card = tiny_mnist_card("mnist-class-gan")
    tracked, steps = {}, []

    def hook(gan, step):
        steps.append(step)
        if "average" not in tracked:  # the hook sees the weights after step 1; start from the initial ones
            tracked["average"] = ParameterAverage(build_class_gan(card).generator, 0.7)
        tracked["average"].update(gan.generator)

    averaged = train_class_gan(card, data_dir=mnist_fixture_dir, device="cpu", on_generator_step=hook)
    plain = train_class_gan(plain_card, data_dir=mnist_fixture_dir, device="cpu")
    assert steps == list(range(1, averaged.metrics["generator_steps"] + 1))
    for got, expected in zip(averaged.module.generator.parameters(), tracked["average"].shadow):
        torch.testing.assert_close(got, expected)
    # the average changes only what is kept: the critics follow the same trajectory
    for a, b in zip(averaged.module.critic_net.parameters(), plain.module.critic_net.parameters()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(averaged.module.generator.parameters(),
                                                      plain.module.generator.parameters()))
