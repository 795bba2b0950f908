"""The GWIN: shapes, the label-conditional gradient penalty on a known answer, the card, pinning, tiny training.

Training runs against a fake classifier (a nearest-class-mean template
matcher with noisy logits per posterior "draw") put in place of
the loader of the classifier, so these tests need neither the Bayesian LeNet nor
its training.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ppl_audit.cache import load_weights
from ppl_audit.cards import ModelCard, load_card
from ppl_audit.data import load_dataset
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.generative import GWIN, ConditionalGenerator, LabelCritic, conditional_gradient_penalty
from ppl_audit.generative import gwin as gwin_module
from ppl_audit.generative.gwin import _ClassSampler, build_gwin, pin, rejection_check, train_gwin
from ppl_audit.training import load_model
from ppl_audit.training import training_report

pytestmark = pytest.mark.usefixtures("one_thread")

FAKE_HASH = "0123456789abcdef"
TINY_GWIN = {
    "architecture": {"noise_dim": 4, "channels": 4, "critic_channels": 4},
    "data": {"train_split": "test", "num_train": 64, "num_test": 32},
    "training": {"generator_steps": 2, "batch_size": 8, "critic_steps": 2, "classifier_samples": 3,
                 "confidence_threshold": 0.5},
}
FAKE_SCALE = 0.2  # logits = -0.2 x squared distance to the class means: 85% accurate, ~half rejected at 0.9
FAKE_NOISE = 0.5  # logit noise per "posterior draw"


class FakeBNN:
    """Implements what a GWIN uses of the Bayesian LeNet: predict, sample_logits, class_names, trained.card."""

    class_names = tuple(str(d) for d in range(10))

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, recipe_hash: str = FAKE_HASH):
        self.means = torch.stack([images[labels == k].mean(0) if (labels == k).any() else images.mean(0)
                                  for k in range(10)]).flatten(1)
        self.trained = SimpleNamespace(card=SimpleNamespace(recipe_hash=recipe_hash))
        self.calls = []

    def sample_logits(self, x, generator):
        flat = x.flatten(1)
        sq = flat.square().sum(1, keepdim=True) - 2 * flat @ self.means.T + self.means.square().sum(1)
        noise = torch.randn(len(x), 10, generator=generator)
        return -FAKE_SCALE * sq + FAKE_NOISE * noise

    @torch.no_grad()
    def predict(self, x, num_samples=10, generator=None):
        samples = torch.stack([self.sample_logits(x, generator).softmax(-1) for _ in range(num_samples)])
        mean = samples.mean(0)
        labels = mean.argmax(1)
        certainty = samples.gather(2, labels.expand(num_samples, -1)[..., None]).squeeze(-1).median(0).values
        return SimpleNamespace(labels=labels, certainty=certainty, mean_probs=mean, samples=samples)


@pytest.fixture(scope="module")
def fixture_images(mnist_fixture_dir):
    ds = load_dataset("mnist", "test", data_dir=mnist_fixture_dir)
    return ds.images, ds.labels


@pytest.fixture
def fake_bnn(fixture_images, monkeypatch):
    """Put a FakeBNN in place of the classifier loader; ``fake.calls`` records the loader's arguments."""
    fake = FakeBNN(*fixture_images)

    def loader(name, **kwargs):
        fake.calls.append((name, kwargs))
        return fake

    monkeypatch.setattr(gwin_module, "_load_classifier", loader)
    return fake


def tiny_card(**overrides):
    tables = {table: dict(values) for table, values in TINY_GWIN.items()}
    for table, values in overrides.items():
        tables[table] = {**tables.get(table, {}), **values}
    return load_card("mnist-gwin").with_overrides(**tables)


def classifier_card(epochs: int) -> ModelCard:
    """A stand-in card of kind bayesian-lenet-classifier (only its recipe hash matters to pin)."""
    return ModelCard("fake-bnn", "bayesian-lenet-classifier", "", {"type": "fake"}, {"dataset": "mnist"},
                     {"epochs": epochs})


# --------------------------------------------------------------------------- networks


def test_generator_and_critic_shapes_and_range():
    torch.manual_seed(0)
    gen = ConditionalGenerator(4, 4).eval()
    x = gen(torch.rand(40, 1, 28, 28), 3 * torch.randn(40, 4))
    assert x.shape == (40, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    scores = LabelCritic(10, 4)(x, torch.arange(40) % 10)
    assert scores.shape == (40,) and torch.isfinite(scores).all()


def test_generator_starts_near_its_input(fixture_images):
    # The skip path from x is initialised so that an untrained G is close to the identity.
    torch.manual_seed(0)
    x = fixture_images[0][:16]
    with torch.no_grad():
        out = ConditionalGenerator(4, 8).eval()(x, torch.randn(16, 4))
    assert float((out - x).abs().mean()) < 0.1


def test_critic_score_depends_on_the_label():
    torch.manual_seed(0)
    critic = LabelCritic(10, 4)
    x = torch.rand(1, 1, 28, 28).expand(10, -1, -1, -1)
    scores = critic(x, torch.arange(10))
    assert len(set(scores.tolist())) == 10


class LinearLabelCritic(nn.Module):
    """D(x, y) = w . x + b_y: its gradient in x is w for every label, so the penalty is (||w|| - 1)^2."""

    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.full((784,), w))
        self.b = nn.Parameter(torch.arange(10.0))

    def forward(self, x, labels):
        return x.flatten(1) @ self.w + self.b[labels]


def test_conditional_gradient_penalty_of_a_linear_critic_is_known():
    labels = torch.tensor([0, 3, 3, 9, 1])
    penalty = conditional_gradient_penalty(LinearLabelCritic(0.1), torch.rand(5, 1, 28, 28),
                                           torch.rand(5, 1, 28, 28), labels, torch.Generator().manual_seed(0))
    assert math.isclose(float(penalty.detach()), (0.1 * math.sqrt(784) - 1) ** 2, rel_tol=1e-5)


def test_conditional_gradient_penalty_passes_the_labels_and_keeps_the_graph():
    seen = []

    class Recording(LinearLabelCritic):
        def forward(self, x, labels):
            seen.append(labels)
            return super().forward(x, labels)

    critic = Recording(0.1)
    labels = torch.tensor([4, 2])
    penalty = conditional_gradient_penalty(critic, torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28), labels,
                                           torch.Generator().manual_seed(0))
    penalty.backward()  # create_graph=True: the penalty trains the critic's weights
    assert torch.equal(seen[0], labels) and critic.w.grad is not None


def test_state_dict_holds_generator_and_critic():
    keys = GWIN(4, 4).state_dict()
    assert {k.split(".")[0] for k in keys} == {"generator", "critic"}


def test_transform_is_seeded_chunk_invariant_and_restores_the_mode():
    gwin = GWIN(4, 4).train()
    x = torch.rand(7, 1, 28, 28)
    a = gwin.transform(x, torch.Generator().manual_seed(3), chunk=3)
    b = gwin.transform(x, torch.Generator().manual_seed(3))
    c = gwin.transform(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and not a.requires_grad
    assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, c, atol=1e-5)
    assert gwin.training


@pytest.mark.parametrize("x, message", [
    (torch.rand(2, 1, 14, 14), r"shape \(N, 1, 28, 28\)"),
    (torch.rand(1, 28, 28), r"shape \(N, C, H, W\)"),
    (torch.rand(2, 1, 28, 28) + 1, r"\[0, 1\]"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "floating point"),
])
def test_transform_rejects_bad_images(x, message):
    with pytest.raises(InvalidInputError, match=message):
        GWIN(4, 4).transform(x, torch.Generator())


def test_class_sampler_draws_images_of_the_requested_labels():
    labels = torch.tensor([3, 1, 3, 0, 1, 1, 3, 2])
    sampler = _ClassSampler(labels, 10)
    y = torch.tensor([0, 1, 2, 3] * 50)
    idx = sampler(y, torch.Generator().manual_seed(0))
    assert torch.equal(labels[idx], y)
    assert set(idx[y == 1].tolist()) == {1, 4, 5}  # every image of a class is drawn


# --------------------------------------------------------------------------- the card


@pytest.mark.parametrize("override, message", [
    ({"training": {"confidence_threshold": 1.5}}, r"confidence_threshold must be a number in \[0, 1\]"),
    ({"training": {"gradient_penalty": -1.0}}, "gradient_penalty must be a number >= 0"),
    ({"training": {"transformation_penalty": -0.1}}, "transformation_penalty must be a number >= 0"),
    ({"training": {"beta2": 1.0}}, r"beta2 must be a number in \[0, 1\)"),
    ({"training": {"uncertain_input_fraction": 1.0}}, r"uncertain_input_fraction must be a number in \[0, 1\)"),
    ({"training": {"uncertain_input_fraction": float("nan")}}, "uncertain_input_fraction must be a number"),
    ({"training": {"augment_shift_pixels": 14}}, r"augment_shift_pixels must be an integer in 0\.\.13"),
    ({"training": {"augment_shift_pixels": True}}, "augment_shift_pixels must be an integer"),
    ({"training": {"generator_steps": 0}}, "generator_steps must be a positive integer"),
    ({"training": {"critic_steps": 1.5}}, "critic_steps must be a positive integer"),
    ({"training": {"classifier_samples": 0}}, "classifier_samples must be a positive integer"),
    ({"training": {"learning_rate": 0}}, "learning_rate must be a number > 0"),
    ({"training": {"classifier_recipe_hash": "xyz"}}, "classifier_recipe_hash must be 16 hex digits"),
    ({"training": {"classifier": ""}}, "classifier must be the name"),
    ({"training": {"epochs": 3}}, r"unknown key\(s\) \['epochs'\]"),
    ({"architecture": {"noise_dim": 0}}, "noise_dim must be a positive integer"),
    ({"architecture": {"type": "dcgan-conv"}}, "type must be 'gwin-conv'"),
])
def test_card_values_are_checked(override, message):
    with pytest.raises(AuditFileError, match=message):
        build_gwin(load_card("mnist-gwin").with_overrides(**override))


def test_shipped_card_builds():
    card = load_card("mnist-gwin")
    assert card.kind == "gwin" and card.training["classifier"] == "mnist-bayesian-lenet5"
    assert build_gwin(card).noise_dim == 16


def test_pin_follows_the_classifier_recipe(card_file):
    first, second = card_file(classifier_card(1)), card_file(classifier_card(2))
    card = load_card("mnist-gwin").with_overrides(training={"classifier": str(first)})
    pinned = pin(card)
    assert pinned.training["classifier_recipe_hash"] == classifier_card(1).recipe_hash
    assert pin(pinned).recipe_hash == pinned.recipe_hash  # pinning twice changes nothing
    repinned = pin(card.with_overrides(training={"classifier": str(second)}))
    assert repinned.training["classifier_recipe_hash"] == classifier_card(2).recipe_hash
    assert len({card.recipe_hash, pinned.recipe_hash, repinned.recipe_hash}) == 3


# --------------------------------------------------------------------------- training


def test_tiny_train_gwin_runs_against_a_fake_classifier(fake_bnn, mnist_fixture_dir, tmp_path):
    card = tiny_card(training={"classifier_recipe_hash": FAKE_HASH})
    seen = []
    result = train_gwin(card, data_dir=mnist_fixture_dir, device="cpu", cache=tmp_path,
                        progress=lambda task, done, total: seen.append((task, done, total)))
    metrics = result.metrics
    assert metrics["generator_steps"] == 2 and metrics["num_train"] == 64
    assert 0 < metrics["confident_set_size"] <= 64
    assert 0 < metrics["test_rejected_fraction"] <= 1
    assert metrics["test_num_rejected"] == round(metrics["test_rejected_fraction"] * 32)
    for key in ("test_rejected_accuracy_before", "test_rejected_accuracy_after"):
        assert 0 <= metrics[key] <= 1
    panels = result.history["panels"]
    assert set(panels) == {"critic loss", "generator adversarial loss", "transformation loss (nats)",
                           "gradient penalty"}
    assert all(len(v) == 2 and all(map(math.isfinite, v)) for series in panels.values() for v in series.values())
    assert result.history["rejected_examples"]["test_indices"]
    assert ("training GWIN", 2, 2) in seen
    name, kwargs = fake_bnn.calls[0]
    assert name == "mnist-bayesian-lenet5" and kwargs["cache"] == tmp_path and kwargs["device"].type == "cpu"
    # the same card and seed give the same weights
    again = train_gwin(card, data_dir=mnist_fixture_dir, device="cpu", cache=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(result.module.state_dict().values(),
                                                 again.module.state_dict().values()))


def test_shifted_inputs_change_training_and_stay_seeded(fake_bnn, mnist_fixture_dir, tmp_path):
    def weights(**training):
        card = tiny_card(training={"classifier_recipe_hash": FAKE_HASH, **training})
        return list(train_gwin(card, data_dir=mnist_fixture_dir, device="cpu", cache=tmp_path).module.state_dict()
                    .values())

    plain, shifted, again = weights(), weights(augment_shift_pixels=2), weights(augment_shift_pixels=2)
    assert all(torch.equal(a, b) for a, b in zip(shifted, again))
    assert not all(torch.equal(a, b) for a, b in zip(plain, shifted))


def test_train_gwin_refuses_a_classifier_of_another_recipe(fake_bnn, mnist_fixture_dir):
    card = tiny_card(training={"classifier_recipe_hash": "fedcba9876543210"})
    with pytest.raises(AuditFileError, match="classifier_recipe_hash = 'fedcba9876543210'.*0123456789abcdef"):
        train_gwin(card, data_dir=mnist_fixture_dir, device="cpu")


def test_loading_a_gwin_pins_caches_and_reports(fake_bnn, card_file, mnist_fixture_dir, tmp_path, monkeypatch):
    # The fake classifier claims the recipe of a card file, so load_model's pin() and train_gwin's check agree.
    classifier = card_file(classifier_card(7))
    fake_bnn.trained.card.recipe_hash = classifier_card(7).recipe_hash
    card = tiny_card(training={"classifier": str(classifier)})
    trained = load_model(card, cache=tmp_path, data_dir=mnist_fixture_dir, device="cpu", kind="gwin")
    assert trained.card.training["classifier_recipe_hash"] == classifier_card(7).recipe_hash
    assert fake_bnn.calls[0][1]["cache"] == tmp_path  # Trainer(needs_cache=True) passes the cache on
    keys = set(load_weights(trained.weights_path)[0])
    assert any(k.startswith("generator.") for k in keys) and any(k.startswith("critic.") for k in keys)
    assert load_model(card, cache=tmp_path, device="cpu",
                      kind="gwin").weights_path == trained.weights_path  # from the cache
    assert len(fake_bnn.calls) == 1

    monkeypatch.setenv("PPL_AUDIT_DATA", str(mnist_fixture_dir))
    section = training_report(trained).sections[-1]
    assert section.name == "rejected_examples" and section.figures[0].name == "rejected_examples"
    monkeypatch.setenv("PPL_AUDIT_DATA", str(tmp_path / "missing"))
    section = training_report(trained).sections[-1]
    assert not section.figures and "could not be read" in section.paragraphs[0]


def test_rejection_check_with_nothing_rejected_gives_nan():
    clf = SimpleNamespace(predict=lambda x, num_samples, generator: SimpleNamespace(
        labels=torch.zeros(len(x), dtype=torch.long), certainty=torch.ones(len(x))))
    out = rejection_check(GWIN(4, 4), clf, torch.rand(3, 1, 28, 28), torch.zeros(3, dtype=torch.long))
    assert out["rejected_fraction"] == 0 and math.isnan(out["rejected_accuracy_after"])


def test_loading_a_gwin_wants_a_gwin_card():
    with pytest.raises(InvalidInputError, match="a 'gwin' model card is needed"):
        load_model("mnist-gan", kind="gwin")
