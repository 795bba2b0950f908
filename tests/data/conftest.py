"""Fixtures for the data layer: the staged real data (skipped when absent) and tiny data folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ppl_audit.data import DATA_ENV, write_idx

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DATA = REPO_ROOT / "tests" / "fixtures" / "data"  # 100 MNIST test images, see its PROVENANCE.md
STAGED_DATA = REPO_ROOT.parent / "shared" / "data"  # where the project's staged real data sits beside the checkout


def _real_data_dir() -> tuple[Path | None, str]:
    """The real data folder and, when there is none, why."""
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            return path, ""
        return None, f"${DATA_ENV}={env} is not a folder"
    if STAGED_DATA.is_dir():
        return STAGED_DATA, ""
    return None, f"real data not found: set ${DATA_ENV} or stage it at {STAGED_DATA}"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real data folder ($PPL_AUDIT_DATA, else ../shared/data); skips the test when absent."""
    path, reason = _real_data_dir()
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def real_dataset_dir(real_data_dir):
    """``real_dataset_dir("mnist")``: that dataset's folder, or skip naming what is missing."""

    def get(name: str) -> Path:
        folder = real_data_dir / name
        if not folder.is_dir():
            pytest.skip(f"real data has no {name}/ folder under {real_data_dir}")
        return folder

    return get


@pytest.fixture
def fixture_data_dir() -> Path:
    """The committed fixture data folder (tests/fixtures/data)."""
    return FIXTURE_DATA


@pytest.fixture
def no_data_env(monkeypatch):
    """Unset $PPL_AUDIT_DATA for the test."""
    monkeypatch.delenv(DATA_ENV, raising=False)


@pytest.fixture
def make_data_dir(tmp_path):
    """Build a data folder from ``{"mnist/t10k-images-idx3-ubyte.gz": array, "x/a.npz": {"key": array}}``."""

    def make(files: dict) -> Path:
        root = tmp_path / "data"
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, dict):
                np.savez(path, **content)
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                write_idx(path, content)
        root.mkdir(exist_ok=True)
        return root

    return make


def digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 28 x 28 images with labels 0-9 (a stand-in for MNIST files)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


@pytest.fixture
def fake_digits():
    """The :func:`digits` helper, for tests that need made-up MNIST-shaped arrays."""
    return digits
