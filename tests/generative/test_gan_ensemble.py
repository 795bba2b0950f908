"""The GAN ensemble: critic scores, seeding of members, checks, and a tiny card through load_model."""

from __future__ import annotations

import math

import pytest
import torch

from ppl_audit.cache import load_weights
from ppl_audit.cards import load_card
from ppl_audit.errors import AuditFileError, InvalidInputError, ModelOutputError
from ppl_audit.generative.gan import GAN, GANConfig
from ppl_audit.generative.gan_ensemble import GANEnsemble, GANEnsembleConfig, build_gan_ensemble, finetune_critic
from ppl_audit.training import load_model, seeded, training_report

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"architecture": {"members": 2, "channels": 4, "critic_channels": 4},
        "data": {"train_split": "test", "num_train": 100, "num_test": 100},
        "training": {"epochs": 1, "batch_size": 25, "critic_steps": 2, "finetune_critic_steps": 3}}


def tiny_card(**training):
    tables = {k: dict(v) for k, v in TINY.items()}
    tables["training"].update(training)
    return load_card("mnist-gan-ensemble").with_overrides(**tables)


def test_critic_scores_have_one_row_per_member():
    ens = GANEnsemble(members=3, latent_dim=2, channels=4)
    ens.train()
    x = torch.rand(7, 1, 28, 28)
    scores = ens.critic_scores(x, chunk=3)  # chunks of 3, 3, 1
    assert scores.shape == (3, 7) and scores.dtype == torch.float32
    assert ens.training  # the mode is restored
    with torch.no_grad():
        expected = torch.stack([ens.member(k).eval().critic(x) for k in range(3)])
    torch.testing.assert_close(scores, expected)
    assert ens.critic_scores(torch.rand(0, 1, 28, 28)).shape == (3, 0)


def test_member_k_is_a_gan_built_under_seed_plus_k():
    ens = build_gan_ensemble(tiny_card(seed=7))
    for k in range(2):
        with seeded(7 + k):
            alone = GAN(5, 4, 4)
        mine, theirs = ens.member(k).state_dict(), alone.state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[key], theirs[key]) for key in mine)
    assert not torch.equal(ens.member(0).critic.net[0].weight, ens.member(1).critic.net[0].weight)
    assert {".".join(k.split(".")[:3]) for k in ens.state_dict()} == {
        "members.0.generator", "members.0.critic", "members.1.generator", "members.1.critic"}


def test_from_members_keeps_the_gans_and_rejects_other_architectures():
    gans = [GAN(2, 4), GAN(2, 4)]
    ens = GANEnsemble.from_members(gans)
    assert ens.member(1) is gans[1] and ens.latent_dim == 2
    with pytest.raises(InvalidInputError, match=r"different architectures: member 1 has critic\.net\.0\.weight"):
        GANEnsemble.from_members([GAN(2, 4), GAN(2, 4, critic_channels=8)])
    with pytest.raises(InvalidInputError, match="different architectures: member 2 has generator.project.0.weight"):
        GANEnsemble.from_members([GAN(2, 4), GAN(2, 4), GAN(3, 4)])
    with pytest.raises(InvalidInputError, match="at least 2 GANs"):
        GANEnsemble.from_members([GAN(2, 4)])
    with pytest.raises(InvalidInputError, match="member 1 must be a ppl_audit.generative.GAN"):
        GANEnsemble.from_members([GAN(2, 4), torch.nn.Linear(2, 2)])


def test_a_nan_critic_is_a_model_output_error():
    ens = GANEnsemble(members=2, latent_dim=2, channels=4)
    with torch.no_grad():
        ens.member(1).critic.net[-1].bias.fill_(float("nan"))
    with pytest.raises(ModelOutputError, match=r"member 1: 4 NaN, 0 inf"):
        ens.critic_scores(torch.rand(4, 1, 28, 28))


@pytest.mark.parametrize("x, message", [
    (torch.rand(2, 1, 32, 32), r"shape \(N, 1, 28, 28\)"),
    (torch.rand(2, 28, 28), r"shape \(N, C, H, W\)"),
    (torch.full((2, 1, 28, 28), 2.0), r"lie in \[0, 1\]"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "floating point"),
    ([[0.0]], "torch.Tensor"),
])
def test_bad_images_are_invalid_input(x, message):
    with pytest.raises(InvalidInputError, match=message):
        GANEnsemble(members=2, latent_dim=2, channels=4).critic_scores(x)


@pytest.mark.parametrize("kwargs, message", [
    ({"members": 1}, "members must be an integer >= 2, got 1"),
    ({"members": True}, "members must be an integer >= 2, got True"),
    ({"finetune_critic_steps": -1}, "finetune_critic_steps must be an integer >= 0, got -1"),
    ({"finetune_critic_steps": 2.5}, "finetune_critic_steps must be an integer >= 0, got 2.5"),
    ({"epochs": 0}, "epochs must be a positive integer, got 0"),
    ({"channels": 0}, "channels must be a positive integer, got 0"),
    ({"beta2": 1.0}, r"beta2 must be a number in \[0, 1\), got 1.0"),
    ({"learning_rate": 0.0}, "learning_rate must be a number > 0, got 0.0"),
    ({"gradient_penalty": -1.0}, "gradient_penalty must be a number >= 0, got -1.0"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"type": "mlp"}, "type must be 'dcgan-conv', got 'mlp'"),
])
def test_config_values_are_checked(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        GANEnsembleConfig(**kwargs)


def test_card_values_are_checked():
    with pytest.raises(AuditFileError, match="members must be an integer >= 2, got 1"):
        build_gan_ensemble(load_card("mnist-gan-ensemble").with_overrides(architecture={"members": 1}))
    with pytest.raises(AuditFileError, match=r"unknown key\(s\) \['loss'\]"):
        build_gan_ensemble(load_card("mnist-gan-ensemble").with_overrides(training={"loss": "dcgan"}))
    with pytest.raises(InvalidInputError, match="members must be an integer >= 2"):
        GANEnsemble(members=1)


def test_shipped_card_builds_five_members():
    card = load_card("mnist-gan-ensemble")
    assert len(build_gan_ensemble(card)) == 5
    with pytest.raises(InvalidInputError, match="'gan-ensemble' model card is needed"):
        load_model("mnist-gan", kind="gan-ensemble")


def test_finetuning_changes_only_the_critic():
    torch.manual_seed(0)
    gan = GAN(2, 4)
    gan.train()  # fine-tuning must not move the generator's batch-norm statistics either
    generator_before = {k: v.clone() for k, v in gan.generator.state_dict().items()}
    critic_before = {k: v.clone() for k, v in gan.critic.state_dict().items()}
    config = GANConfig(latent_dim=2, channels=4, critic_channels=4, batch_size=4)
    losses = finetune_critic(gan, torch.rand(10, 1, 28, 28), 5, config, torch.Generator().manual_seed(0),
                             log_every=2)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)  # windows of 2; the fifth step is dropped
    assert gan.generator.training and gan.critic.training  # modes restored
    assert all(torch.equal(generator_before[k], v) for k, v in gan.generator.state_dict().items())
    assert any(not torch.equal(critic_before[k], v) for k, v in gan.critic.state_dict().items())
    assert finetune_critic(gan, torch.rand(4, 1, 28, 28), 0, config, torch.Generator()) == []


def test_tiny_ensemble_trains_caches_and_reloads(cache_root, mnist_fixture_dir):
    card = tiny_card()
    trained = load_model(card, cache=cache_root, data_dir=mnist_fixture_dir, device="cpu")
    metrics = trained.metrics
    assert metrics["members"] == 2 and metrics["num_train"] == 100 and metrics["num_test"] == 100
    assert metrics["generator_steps"] == 2  # 4 critic batches of 25, one generator step per 2
    assert metrics["finetune_critic_steps"] == 3
    for key in ("test_critic_gap_per_member", "test_critic_gap_before_finetune_per_member",
                "test_critic_score_real_per_member", "test_critic_score_generated_per_member"):
        assert len(metrics[key]) == 2 and all(math.isfinite(v) for v in metrics[key]), key
    assert math.isclose(metrics["test_critic_gap"], sum(metrics["test_critic_gap_per_member"]) / 2)
    assert metrics["seconds"] > 0
    panels = trained.info["history"]["panels"]
    assert len(panels) == 2
    joint, finetune = panels.values()
    assert set(joint) == set(finetune) == {"member 0", "member 1"}
    assert [len(v) for v in joint.values()] == [4, 4] and [len(v) for v in finetune.values()] == [3, 3]
    keys = set(load_weights(trained.weights_path)[0])
    assert {".".join(k.split(".")[:3]) for k in keys} == {
        "members.0.generator", "members.0.critic", "members.1.generator", "members.1.critic"}

    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    scores = trained.module.critic_scores(x)
    reloaded = load_model(card, cache=cache_root, device="cpu",
                          kind="gan-ensemble")  # no data folder: read from the cache
    assert reloaded.weights_path == trained.weights_path
    assert torch.equal(reloaded.module.critic_scores(x), scores)

    report = training_report(reloaded)
    samples = next(s for s in report.sections if s.name == "samples")
    assert samples.figures[0].name == "samples" and len(samples.figures[0].data["latents"]) == 8


def test_finetuning_in_training_leaves_the_generators_alone(cache_root, mnist_fixture_dir):
    # Same card but for the fine-tuning length: joint training is identical, so the generators
    # must match bit for bit and only the critics differ.
    tuned = load_model(tiny_card(), cache=cache_root, data_dir=mnist_fixture_dir, device="cpu")
    plain = load_model(tiny_card(finetune_critic_steps=0), cache=cache_root, data_dir=mnist_fixture_dir,
                       device="cpu")
    a, b = tuned.module.state_dict(), plain.module.state_dict()
    generators = [k for k in a if ".generator." in k]
    critics = [k for k in a if ".critic." in k]
    assert generators and critics
    assert all(torch.equal(a[k], b[k]) for k in generators)
    for k in range(2):
        assert any(not torch.equal(a[key], b[key]) for key in critics if key.startswith(f"members.{k}."))
    assert plain.metrics["test_critic_gap_per_member"] == plain.metrics["test_critic_gap_before_finetune_per_member"]
    assert plain.metrics["finetune_critic_steps"] == 0
