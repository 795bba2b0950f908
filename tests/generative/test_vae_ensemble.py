"""The VAE ensemble: batched members equal separate VAEs, the IWAE bound on known answers, a tiny trained card."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ppl_audit.cards import load_card
from ppl_audit.errors import AuditFileError, InvalidInputError, ModelOutputError
from ppl_audit.generative.vae import VAE
from ppl_audit.generative.vae_ensemble import VAEEnsemble, build_vae_ensemble
from ppl_audit.training import load_model, seeded, training_report

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = (3, 4, 5)  # one per member
LATENT, HIDDEN = 4, (24, 12)
TINY = {"architecture": {"members": 2, "latent_dim": 3, "hidden": [16]},
        "data": {"train_split": "test", "num_train": 100, "num_test": 100},
        "training": {"epochs": 1, "batch_size": 25},
        # one epoch on 100 images stays near an untrained decoder's -784 ln 2 = -543 nats, far below -105
        "expected": {"min_test_log_likelihood_nats": -1000}}


def _single(seed: int, latent=LATENT, hidden=HIDDEN, likelihood="bernoulli") -> VAE:
    with seeded(seed):
        return VAE(latent, hidden, likelihood).eval()


@pytest.fixture
def singles():
    return [_single(s) for s in SEEDS]


@pytest.fixture
def images():
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _iwae_by_hand(vae: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x) for one VAE, one sample at a time; eps (S, N, D)."""
    mean, log_var = vae.encoder(x)
    q = Normal(mean, (0.5 * log_var).exp())
    log_w = []
    for e in eps:
        z = mean + (0.5 * log_var).exp() * e
        log_w.append(vae.decoder.log_likelihood(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1))
    return torch.logsumexp(torch.stack(log_w), 0) - math.log(len(eps))


# --------------------------------------------------------------------------- batched == separate


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli"])
def test_batched_ensemble_equals_separate_vaes(images, likelihood):
    singles = [_single(s, likelihood=likelihood) for s in SEEDS]
    ensemble = VAEEnsemble.from_members(singles).eval()
    assert (ensemble.num_members, ensemble.latent_dim, ensemble.hidden) == (3, LATENT, HIDDEN)
    n = len(images)
    mean, log_var = ensemble.encode(images)
    assert mean.shape == log_var.shape == (3, n, LATENT)
    # The same noise draws a single VAE takes from its own generator.
    elbo_noise = torch.stack([torch.randn((n, LATENT), generator=torch.Generator().manual_seed(10 + k))
                              for k in range(3)])
    elbo = ensemble.elbo(images, noise=elbo_noise)
    iwae_noise = torch.randn(3, 5, n, LATENT, generator=torch.Generator().manual_seed(1))
    log_lik = ensemble.log_likelihood(images, 5, noise=iwae_noise)
    rate = ensemble.rate(images)
    z = torch.randn(3, 7, LATENT)
    logits = ensemble.decoder_logits(z)
    for k, vae in enumerate(singles):
        m, lv = vae.encoder(images)
        assert torch.allclose(mean[k], m, atol=1e-5) and torch.allclose(log_var[k], lv, atol=1e-5)
        single_elbo = vae.elbo(images, torch.Generator().manual_seed(10 + k))
        assert torch.allclose(elbo[k], single_elbo, atol=1e-3)
        assert torch.allclose(rate[k], vae.elbo_terms(images)[1].sum(-1), atol=1e-4)
        assert torch.allclose(log_lik[k], _iwae_by_hand(vae, images, iwae_noise[k]), atol=1e-3)
        assert torch.allclose(logits[k].view(7, 1, 28, 28), vae.decoder.logits(z[k]), atol=1e-5)
        # (the continuous Bernoulli's mean amplifies 1e-7 logit rounding to ~4e-5 near logit 0)
        assert torch.allclose(ensemble.decode(z)[k], vae.decoder(z[k]), atol=1e-3)
        # member(k) is a copy of the slices: the same weights, and a plain VAE.
        member = ensemble.member(k)
        assert isinstance(member, VAE) and member.decoder.likelihood == likelihood
        for name, value in vae.state_dict().items():
            assert torch.equal(member.state_dict()[name], value)


def test_seeded_members_start_where_single_vaes_start():
    state = torch.get_rng_state()
    ensemble = VAEEnsemble(3, LATENT, HIDDEN, seed=SEEDS[0])
    assert torch.equal(torch.get_rng_state(), state)  # a seeded ensemble leaves the global generator alone
    for k, seed in enumerate(SEEDS):
        single = _single(seed).state_dict()
        assert all(torch.equal(v, single[n]) for n, v in ensemble.member(k).state_dict().items())
    assert not torch.equal(ensemble.decoder.net[0].weight[0], ensemble.decoder.net[0].weight[1])


def test_results_do_not_depend_on_chunking(singles, images):
    ensemble = VAEEnsemble.from_members(singles)
    noise = torch.randn(3, 4, len(images), LATENT, generator=torch.Generator().manual_seed(0))
    whole = ensemble.log_likelihood(images, 4, noise=noise)
    assert torch.allclose(ensemble.log_likelihood(images, 4, noise=noise, chunk=4), whole, atol=1e-4)
    assert torch.allclose(ensemble.rate(images, chunk=1), ensemble.rate(images), atol=1e-5)
    eps = noise[:, 0]
    assert torch.allclose(ensemble.elbo(images, noise=eps, chunk=5), ensemble.elbo(images, noise=eps), atol=1e-4)
    # A generator makes the draws reproducible.
    a = ensemble.log_likelihood(images, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a, ensemble.log_likelihood(images, 4, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("own_batches", [False, True])
def test_each_members_gradient_is_its_own(singles, images, own_batches):
    """The trainer's summed loss gives member k exactly the gradient of its own mean negative ELBO.

    With ``own_batches`` each member gets its own images (``independent_batches``: ``(K, B, 784)``).
    """
    ensemble = VAEEnsemble.from_members(singles)
    per_member = (torch.stack([images.roll(k, dims=0) for k in range(3)]) if own_batches
                  else images.expand(3, *images.shape))
    flat = per_member.flatten(-3) if own_batches else images.flatten(1)
    noise = torch.randn(3, len(images), LATENT, generator=torch.Generator().manual_seed(0))
    log_lik, kl = ensemble._elbo_terms(flat, noise)
    (-(log_lik - 0.5 * kl).mean(1).sum()).backward()
    for k, vae in enumerate(singles):
        x = per_member[k]
        mean, log_var = vae.encoder(x)
        z = mean + (0.5 * log_var).exp() * noise[k]
        kl_k = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(-1)
        (-(vae.decoder.log_likelihood(x, z) - 0.5 * kl_k).mean()).backward()
        grads = {n: p.grad for n, p in ensemble.named_parameters()}
        for name, p in vae.named_parameters():
            assert torch.allclose(grads[name][k], p.grad, atol=1e-4), name


# --------------------------------------------------------------------------- known answers


def test_one_sample_bound_is_the_one_sample_elbo_with_a_monte_carlo_kl(singles, images):
    ensemble = VAEEnsemble.from_members(singles)
    eps = torch.randn(3, 1, len(images), LATENT, generator=torch.Generator().manual_seed(0))
    bound = ensemble.log_likelihood(images, 1, noise=eps)
    elbo = ensemble.elbo(images, noise=eps[:, 0])  # closed-form KL
    mean, log_var = ensemble.encode(images)
    z = mean + (0.5 * log_var).exp() * eps[:, 0]
    mc_kl = (Normal(mean, (0.5 * log_var).exp()).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)
    closed_kl = ensemble.rate(images)
    assert torch.allclose(bound, elbo + closed_kl - mc_kl, atol=1e-3)


def test_sixteen_sample_bound_exceeds_the_elbo_on_average(singles, images):
    ensemble = VAEEnsemble.from_members(singles)
    with torch.no_grad():
        elbo = torch.stack([ensemble.elbo(images, generator=torch.Generator().manual_seed(s)) for s in range(64)])
        bound = torch.stack([ensemble.log_likelihood(images, 16, torch.Generator().manual_seed(s))
                             for s in range(8)])
    gap = bound.mean(0) - elbo.mean(0)  # (K, N)
    assert (gap.mean(1) > 0).all()
    assert bound.shape == (8, 3, len(images)) and (bound < 0).all()


def test_rate_is_the_closed_form_kl_to_the_prior(singles, images):
    ensemble = VAEEnsemble.from_members(singles)
    mean, log_var = ensemble.encode(images)
    expected = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(ensemble.rate(images), expected, atol=1e-5)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("other, field", [
    (dict(latent=5), "latent_dim"),
    (dict(hidden=(24, 8)), "hidden"),
    (dict(hidden=(24,)), "hidden"),
    (dict(likelihood="continuous-bernoulli"), "likelihood"),
])
def test_members_of_different_architectures_are_refused(other, field):
    with pytest.raises(InvalidInputError, match=rf"member 2 has {field}=.*member 0 has {field}="):
        VAEEnsemble.from_members([_single(0), _single(1), _single(2, **other)])


def test_from_members_refuses_nothing_and_non_vaes():
    with pytest.raises(InvalidInputError, match="at least one member"):
        VAEEnsemble.from_members([])
    with pytest.raises(InvalidInputError, match="member 1 must be a ppl_audit.generative.vae.VAE"):
        VAEEnsemble.from_members([_single(0), torch.nn.Linear(2, 2)])


def test_nan_parameters_raise_model_output_error(singles, images):
    ensemble = VAEEnsemble.from_members(singles)
    with torch.no_grad():
        ensemble.decoder.net[-1].bias[1, 0] = float("nan")
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ModelOutputError, match=r"log-likelihood is NaN or infinite for 6 of 6 inputs \(members \[1\]"):
        ensemble.log_likelihood(images, 2, g)
    with pytest.raises(ModelOutputError, match=r"ELBO is NaN .*\(members \[1\] of 3\)"):
        ensemble.elbo(images, generator=g)
    with torch.no_grad():
        ensemble.encoder.head.weight[2, 0, 0] = float("inf")
    with pytest.raises(ModelOutputError, match=r"rate is NaN .*\(members \[2\] of 3\)"):  # no decoder in the rate
        ensemble.rate(images)


def test_non_finite_results_are_counted_per_input(singles, images):
    ensemble = VAEEnsemble.from_members(singles)
    with torch.no_grad():
        ensemble.encoder.body[0].weight[0, :, 0] = 1e38  # overflows only for images whose first pixel is not 0
    x = images.clone()
    x[:2, 0, 0, 0] = 0.0
    x[2:, 0, 0, 0] = 1.0
    with pytest.raises(ModelOutputError, match=r"for 4 of 6 inputs \(members \[0\] of 3\)"):
        ensemble.log_likelihood(x, 2, torch.Generator().manual_seed(0))
    assert torch.isfinite(ensemble.log_likelihood(x[:2], 2, torch.Generator().manual_seed(0))).all()


@pytest.mark.parametrize("x, message", [
    (torch.rand(2, 1, 14, 14), r"shape \(N, 1, 28, 28\)"),
    (torch.rand(1, 28, 28), r"shape \(N, C, H, W\)"),
    (torch.rand(2, 1, 28, 28) + 1, r"\[0, 1\]"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "floating point"),
])
@pytest.mark.parametrize("method", ["encode", "elbo", "log_likelihood", "rate"])
def test_bad_images_raise_invalid_input(singles, x, message, method):
    with pytest.raises(InvalidInputError, match=message):
        getattr(VAEEnsemble.from_members(singles), method)(x)


def test_bad_arguments_raise_invalid_input(singles, images):
    ensemble = VAEEnsemble.from_members(singles)
    with pytest.raises(InvalidInputError, match="num_samples must be a positive integer"):
        ensemble.log_likelihood(images, 0)
    with pytest.raises(InvalidInputError, match=r"noise must have shape \(3, 2, 6, 4\)"):
        ensemble.log_likelihood(images, 2, noise=torch.zeros(3, 2, 5, LATENT))
    with pytest.raises(InvalidInputError, match="chunk must be a positive integer"):
        ensemble.elbo(images, chunk=0)
    with pytest.raises(InvalidInputError, match=r"latents must have shape \(3, \.\.\., 4\)"):
        ensemble.decoder_logits(torch.zeros(2, 5, LATENT))
    with pytest.raises(InvalidInputError, match=r"member index must be an integer in \[0, 3\)"):
        ensemble.member(3)


# --------------------------------------------------------------------------- the card


@pytest.mark.parametrize("override, message", [
    ({"architecture": {"members": 1}}, "members must be an integer >= 2"),
    ({"architecture": {"members": 2.5}}, "members must be an integer >= 2"),
    ({"training": {"beta": 0.0}}, "beta must be a number > 0"),
    ({"training": {"beta": -0.1}}, "beta must be a number > 0"),
    ({"training": {"beta": float("nan")}}, "beta must be a number > 0"),
    ({"architecture": {"latent_dim": 0}}, "latent_dim must be a positive integer"),
    ({"architecture": {"hidden": []}}, "hidden must be a non-empty list of positive integers"),
    ({"architecture": {"likelihood": "gaussian"}}, "likelihood must be one of"),
    ({"architecture": {"type": "mlp-vae"}}, "type must be 'mlp-vae-ensemble'"),
    ({"training": {"epochs": 0}}, "epochs must be a positive integer"),
    ({"training": {"learning_rate": 0}}, "learning_rate must be a number > 0"),
    ({"training": {"independent_batches": 1}}, "independent_batches must be true or false"),
    ({"training": {"seed": -1}}, "seed must be an integer >= 0"),
    ({"training": {"epoch": 3}}, r"unknown key\(s\) \['epoch'\] in \[training\]"),
    ({"data": {"num_train": 0}}, "num_train must be a positive integer"),
])
def test_card_values_are_checked(override, message):
    with pytest.raises(AuditFileError, match=message):
        build_vae_ensemble(load_card("mnist-vae-ensemble").with_overrides(**override))


def test_shipped_cards_build_and_differ_only_in_beta():
    plain, beta = load_card("mnist-vae-ensemble"), load_card("mnist-vae-ensemble-beta01")
    assert plain.kind == beta.kind == "vae-ensemble"
    assert plain.training["beta"] == 1.0 and beta.training["beta"] == 0.1
    assert plain.architecture == beta.architecture and plain.data == beta.data
    assert {k: v for k, v in plain.training.items() if k != "beta"} == \
        {k: v for k, v in beta.training.items() if k != "beta"}
    ensemble = build_vae_ensemble(plain)
    assert (ensemble.num_members, ensemble.latent_dim) == (5, 16)


def test_tiny_card_trains_caches_and_reloads(cache_root, mnist_fixture_dir):
    card = load_card("mnist-vae-ensemble").with_overrides(**TINY)
    trained = load_model(card, cache=cache_root, data_dir=mnist_fixture_dir, device="cpu")
    metrics = trained.metrics
    assert set(metrics) >= {"test_log_likelihood_nats", "test_elbo_nats", "test_rate_nats",
                            "test_log_likelihood_nats_per_member", "test_elbo_nats_per_member", "members",
                            "num_train", "num_test", "seconds"}
    assert metrics["members"] == 2 and metrics["num_train"] == metrics["num_test"] == 100
    per_member = metrics["test_log_likelihood_nats_per_member"]
    assert len(per_member) == 2 and math.isclose(metrics["test_log_likelihood_nats"], sum(per_member) / 2)
    assert -784 * math.log(2) * 2 < metrics["test_elbo_nats"] < 0
    # The IWAE bound is tighter than the ELBO (a ~1 nat margin for sampling noise on 100 images).
    assert metrics["test_log_likelihood_nats"] > metrics["test_elbo_nats"] - 1.0
    panel = trained.info["history"]["panels"]["negative ELBO per image (nats)"]
    assert sorted(panel) == ["member 1", "member 2"] and all(len(v) == 1 for v in panel.values())

    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    before = trained.module.log_likelihood(x, generator=torch.Generator().manual_seed(0))
    again = load_model(card, cache=cache_root, data_dir="/nonexistent", device="cpu",
                       kind="vae-ensemble")  # cached: no data read
    assert again.info == trained.info
    after = again.module.log_likelihood(x, generator=torch.Generator().manual_seed(0))
    assert before.shape == (2, 5) and torch.equal(before, after)

    member = again.module.member(1)
    assert member.decoder(torch.zeros(2, 3)).shape == (2, 1, 28, 28)
    report = training_report(again)
    assert [s.name for s in report.sections][-2:] == ["members", "samples"]


def test_independent_batches_train_reproducibly_and_differently(cache_root, mnist_fixture_dir):
    card = load_card("mnist-vae-ensemble").with_overrides(**TINY)
    own = card.with_overrides(training={"independent_batches": True})
    shared, first, second = (load_model(c, cache=cache_root, data_dir=mnist_fixture_dir, device="cpu", retrain=True)
                             for c in (card, own, own))
    assert own.recipe_hash != card.recipe_hash
    weights = [list(t.module.state_dict().values()) for t in (shared, first, second)]
    assert all(torch.equal(a, b) for a, b in zip(weights[1], weights[2]))
    assert not all(torch.equal(a, b) for a, b in zip(weights[0], weights[1]))
    assert -784 * math.log(2) * 2 < first.metrics["test_elbo_nats"] < 0


def test_a_diverging_member_stops_training(cache_root, mnist_fixture_dir):
    card = load_card("mnist-vae-ensemble").with_overrides(**TINY).with_overrides(training={"learning_rate": 1e30})
    with pytest.raises(ModelOutputError, match=r"members \[0, 1\] of 2 diverged .* in epoch 1"):
        load_model(card, cache=cache_root, data_dir=mnist_fixture_dir, device="cpu")
    assert not card.cache_path(cache_root).exists()


def test_loader_refuses_another_kind(cache_root):
    with pytest.raises(InvalidInputError, match="a 'vae-ensemble' model card is needed"):
        load_model("mnist-vae", cache=cache_root, kind="vae-ensemble")
