"""Smoke runs of the level-set reference and peer benchmarks' --quick modes (issue 21), and their guards."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _reference  # noqa: E402
import levelset_peers  # noqa: E402



def _run(script, *args, timeout=900):
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", *args], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow  # a --quick run loads the default classifier and samples: a minute or two on 2 cores
def test_reference_quick_runs_and_writes(tmp_path):
    path = tmp_path / "ref.json"
    stdout = _run("levelset_reference.py", "--out", str(path))
    assert "house-rocket-c10" in stdout and "z w=" in stdout
    data = json.loads(path.read_text())
    ref = data["cases"]["house-rocket-c10"]["reference"]
    assert data["schema_version"] == 1 and ref["method"] == "prior-importance" and ref["log_z_se"] > 0
    assert set(ref["quantities"]) == {"w", "h", "t", "p_rocket", "p_house"}


@pytest.mark.slow
@pytest.mark.parametrize("peer", levelset_peers.PEERS)
def test_peers_quick_runs(peer, tmp_path):
    if not levelset_peers.installed(peer):
        pytest.skip(f"{peer} is not installed: pip install -e .[peers]")
    path = tmp_path / "peers.json"
    _run("levelset_peers.py", "--peers", peer, "--max-seconds", "600", "--out", str(path))
    rows = {r[1]: r for r in json.loads(path.read_text())["rows"]}
    assert rows[peer][2] == "ok", rows[peer]
    assert rows[peer][5] > 0 and rows[peer][11] is not None  # an ESS and an agreement with the reference


def test_a_missing_peer_is_a_row_not_a_crash(monkeypatch):
    monkeypatch.setitem(levelset_peers.MODULES, "pocomc", "no_such_module_for_the_test")
    assert not levelset_peers.installed("pocomc") and levelset_peers.installed("smc")


class _NanLevelSet:
    """A level set whose log likelihood is NaN: the density must name the peer and the value."""

    def __init__(self, prior):
        self.prior = prior

    def predict(self, z):
        return torch.full((z.shape[0], 2), 0.5)

    def log_likelihood(self, probs):
        return torch.full((probs.shape[0],), math.nan, dtype=torch.float64)


def test_nan_log_density_and_out_of_cube_transform_are_named_errors():
    from ppl_audit.priors import HouseRocketWorld

    density = levelset_peers.CubeDensity(_NanLevelSet(HouseRocketWorld()), "dynesty")
    with pytest.raises(levelset_peers.PeerInputError, match="dynesty: the log likelihood returned nan"):
        density(np.full((2, 4), 0.5))
    with pytest.raises(levelset_peers.PeerInputError, match="dynesty: the prior transform's input left the unit cube"):
        density(np.full((1, 4), 1.5))


def test_lockstep_pool_batches_every_task_and_keeps_order():
    calls = []

    class Density:
        def __call__(self, u):
            calls.append(len(u))
            return u[:, 0] * 2

    pool = levelset_peers.LockstepPool(Density())

    def task(x):  # two likelihood calls a task, like a proposal that is rejected once
        return pool.loglike(np.array([x])) + pool.loglike(np.array([x + 1]))

    assert pool.map(task, range(8)) == [2 * x + 2 * (x + 1) for x in range(8)]
    assert calls == [8, 8]


def test_importance_moments_stream_like_one_batch():
    gen = torch.Generator().manual_seed(0)
    log_w, x = torch.randn(5000, generator=gen, dtype=torch.float64) * 2, torch.randn(5000, 3, generator=gen,
                                                                                        dtype=torch.float64)
    whole, chunked = _reference._WeightedMoments(), _reference._WeightedMoments()
    whole.add(log_w, x)
    for a, b in zip(log_w.split(700), x.split(700)):
        chunked.add(a, b)
    one, many = whole.result(), chunked.result()
    w = torch.softmax(log_w, 0)
    mean = w @ x
    assert torch.allclose(one["mean"], mean) and torch.allclose(many["mean"], mean)
    assert torch.allclose(many["mcse"], (w.square() @ (x - mean).square()).sqrt())
    assert math.isclose(many["log_z"], float(torch.logsumexp(log_w, 0)) - math.log(5000), rel_tol=1e-9)
    assert math.isclose(many["ess"], float(1 / w.square().sum()), rel_tol=1e-9)


def test_peer_libraries_are_optional():
    assert importlib.util.find_spec("ppl_audit") is not None
    text = (BENCHMARKS.parent / "pyproject.toml").read_text()
    assert 'peers = ["pocomc", "nautilus-sampler", "dynesty"]' in text
