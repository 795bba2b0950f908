"""Shared fixtures: a private weights cache, a tiny, fast classifier, and tiny MNIST models and cards."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from ppl_audit.cards import load_card
from ppl_audit.training import load_model

# The suite runs in pytest-xdist workers, one a core: torch threads beyond a core each would only contend.
torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

# Enough renders and epochs for ~95% accuracy in a few seconds: tests need a
# classifier that separates the classes, not the audited one. Its [expected]
# floor is one such a tiny model clears (training below a card's floor fails).
TINY_ACCURACY_FLOOR = 0.85
TINY_TRAINING = {"data": {"num_train": 2000, "num_test": 500}, "training": {"epochs": 2, "batch_size": 64},
                 "expected": {"min_test_accuracy": TINY_ACCURACY_FLOOR}}


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    """A weights cache private to this test session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(cache_root):
    """The private cache for the whole session: module fixtures too (they run before any test's own
    fixtures), so none trains into, or reads a stale model from, the user's ``~/.cache/ppl-audit``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PPL_AUDIT_CACHE", str(cache_root))
        yield


@pytest.fixture(scope="session")
def tiny_card():
    """The shipped model card with tiny training sizes."""
    return load_card("house-rocket-cnn").with_overrides(**TINY_TRAINING)


@pytest.fixture(scope="session")
def tiny_card_file(tmp_path_factory, tiny_card):
    """The tiny card written as a TOML file (for the CLI and audit files)."""
    from ppl_audit.cards import _shipped_card

    text = _shipped_card("house-rocket-cnn")
    for table, values in TINY_TRAINING.items():
        for key, value in values.items():
            lines = text.splitlines()
            section = None
            for i, line in enumerate(lines):
                if line.startswith("["):
                    section = line.strip("[] ")
                if section == table and line.split("=")[0].strip() == key:
                    lines[i] = f"{key} = {value}"
            text = "\n".join(lines) + "\n"
    path = tmp_path_factory.mktemp("cards") / "tiny-house-rocket.toml"
    path.write_text(text)
    assert load_card(path).recipe_hash == tiny_card.recipe_hash and load_card(path).expected == tiny_card.expected
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tiny_card, cache_root):
    """The tiny classifier, trained once per session into the private cache."""
    return load_model(tiny_card, cache=str(cache_root), device="cpu", kind="house-rocket-classifier").model


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


# --------------------------------------------------------------------------- MNIST models, tiny

FIXTURE_DATA = Path(__file__).resolve().parent / "fixtures" / "data"  # 100 MNIST test images (test split only)


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Tiny models train on one thread: with two, OpenMP's hand-offs cost more than the work, and on a
    shared, busy 2-core machine a tiny training run measured 40x slower (1.7 s against 0.04 s)."""
    with torch_threads(1):
        yield


# The fixture has only a test split, so tiny cards train on it; one epoch with
# narrow networks takes about a second per model. Such a model learns next to
# nothing (LeNet: 8% accuracy, VAE: -542 nats, about 784 ln 2), so the tiny
# cards' [expected] floors are ones an untrained model meets: a shipped floor
# (0.99, -120 nats) would make their training fail, as it should.
NO_ACCURACY_FLOOR = {"min_test_accuracy": 0.0}
UNTRAINED_ELBO_FLOOR = {"min_test_elbo_nats": -1000}  # an untrained Bernoulli decoder: about -784 ln 2 = -543
TINY_MNIST = {
    "mnist-lenet5": {"architecture": {"conv_channels": [4, 8], "hidden": [16, 12]},
                     "training": {"epochs": 1, "batch_size": 25, "augment_shift_pixels": 1},
                     "expected": NO_ACCURACY_FLOOR},
    "mnist-vae": {"architecture": {"hidden": [32]}, "training": {"epochs": 1, "batch_size": 25},
                  "expected": UNTRAINED_ELBO_FLOOR},
    "mnist-gan": {"architecture": {"channels": 4, "critic_channels": 4},
                  "training": {"epochs": 1, "batch_size": 25, "critic_steps": 2}, "data": {"num_train": 50}},
    "mnist-bayesian-lenet5": {"architecture": {"conv_channels": [4, 8], "hidden": [16, 12]},
                              "training": {"epochs": 2, "batch_size": 20, "learning_rate": 0.01,
                                           "eval_samples": 3},
                              "expected": NO_ACCURACY_FLOOR},
    "mnist-class-vae": {"architecture": {"hidden": [16]}, "training": {"epochs": 1, "batch_size": 4},
                        "expected": UNTRAINED_ELBO_FLOOR},
    "mnist-class-gan": {"architecture": {"generator_hidden": [16], "critic_hidden": [16]},
                        "training": {"epochs": 2, "batch_size": 4, "critic_steps": 1}},
}
TINY_DATA = {"train_split": "test", "num_train": 100, "num_test": 100}


def card_toml(card) -> str:
    """A model card as TOML text (``ModelCard.to_toml``)."""
    return card.to_toml()


@pytest.fixture(scope="session")
def mnist_fixture_dir() -> Path:
    """The committed 100-image MNIST data folder."""
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def tiny_mnist_card():
    """``tiny_mnist_card("mnist-vae", training={...})``: a shipped MNIST card with tiny sizes (and more overrides)."""

    def make(name: str, **overrides):
        tables = {table: dict(values) for table, values in TINY_MNIST[name].items()}
        tables["data"] = {**TINY_DATA, **tables.get("data", {})}
        for table, values in overrides.items():
            tables[table] = {**tables.get(table, {}), **values}
        return load_card(name).with_overrides(**tables)

    return make


@pytest.fixture(scope="session")
def tiny_mnist_model(tiny_mnist_card, cache_root):
    """``tiny_mnist_model("mnist-gan")``: the tiny model, trained once per session into the private cache."""
    from ppl_audit.training import load_model

    trained = {}

    def get(name: str):
        if name not in trained:
            with torch_threads(1):  # see one_thread
                trained[name] = load_model(tiny_mnist_card(name), cache=cache_root, data_dir=FIXTURE_DATA,
                                           device="cpu")
        return trained[name]

    return get


@pytest.fixture(scope="session")
def card_file(tmp_path_factory):
    """``card_file(card)``: the card written as a TOML file with the same recipe hash (for the CLI)."""

    def write(card) -> Path:
        path = tmp_path_factory.mktemp("cards") / f"{card.name}.toml"
        path.write_text(card_toml(card))
        assert load_card(path).recipe_hash == card.recipe_hash
        return path

    return write
