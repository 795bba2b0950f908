"""Shared fixtures: a private weights cache and a tiny, fast classifier."""

from __future__ import annotations

import pytest
import torch

from ppl_audit.cards import load_card

# Enough renders and epochs for ~95% accuracy in a few seconds: tests need a
# classifier that separates the classes, not the audited one.
TINY_TRAINING = {"data": {"num_train": 2000, "num_test": 500}, "training": {"epochs": 2, "batch_size": 64}}


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    """A weights cache private to this test session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _private_cache(cache_root, monkeypatch):
    monkeypatch.setenv("PPL_AUDIT_CACHE", str(cache_root))


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
    assert load_card(path).recipe_hash == tiny_card.recipe_hash
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tiny_card, cache_root):
    """The tiny classifier, trained once per session into the private cache."""
    from ppl_audit.classifiers import load_house_rocket_classifier

    return load_house_rocket_classifier(tiny_card, cache=str(cache_root), device="cpu")


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
