"""Smoke runs of every benchmark's --quick mode (issue 22), in-process, and the results folders' habits.

Each quick run does the benchmark's own work at tiny sizes, or says in one line why it cannot here (its
trained models are not cached: a quick run trains nothing). The runs read the user's weights cache
(``$PPL_AUDIT_CACHE`` as the session started, else ``~/.cache/ppl-audit``), never write it: where it holds the
trained models, a quick run is real work; elsewhere it is a one-line skip. Scripts are imported once and their
``main(argv)`` called, so torch and Pyro import once. ``levelset_reference``, ``levelset_peers`` and
``hostile_inputs`` have their own smoke tests (``test_benchmarks_levelset.py``,
``test_benchmarks_hostile_inputs.py``); the two quick modes that start fresh processes are marked slow.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS, EXPERIMENTS = REPO / "benchmarks", REPO / "experiments"
sys.path.insert(0, str(BENCHMARKS))  # as `python benchmarks/x.py` has it

FAST = ["levelset_house_rocket", "mnist_levelsets", "nearest_neighbour_mnist", "bnn_epoch_cost", "gwin_mnist",
        "ood_mnist", "ood_scoring_cost", "sdim_mnist", "selective_cnn_mnist", "selective_mnist", "synthesis_mnist",
        "levelset_smc_levers", "onnx_classifier_cost", "confident_regions_mnist", "calibration_reference",
        "evaluation_cost", "region_mass_bias", "ink_floor", "render_passes", "smc_mode_tracking"]
SLOW = ["demo_time", "levelset_throughput", "ray_scaling"]  # each starts fresh processes (ppl-audit, samplers, Ray)
OWN_TESTS = ["levelset_reference", "levelset_peers", "hostile_inputs"]
FORMAT_KEYS = ("schema_version", "script", "machine", "rows")
# read at import, before the suite's autouse fixture points PPL_AUDIT_CACHE at an empty private cache
USER_CACHE = os.environ.get("PPL_AUDIT_CACHE") or str(Path.home() / ".cache" / "ppl-audit")


@pytest.fixture
def one_thread():
    """One torch thread, as on a shared 2-core machine; threads and grad mode (scripts may switch it off)
    restored afterwards."""
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_grad_enabled(grad)


def _quick(name: str, capsys, *argv: str) -> str:
    """Run ``benchmarks/NAME.py --quick`` in-process; return its stdout after checking it ended well."""
    status = importlib.import_module(name).main(["--quick", "--cache-dir", USER_CACHE, *argv])
    out = capsys.readouterr().out
    assert status == 0, out[-3000:]
    assert "skipped: " in out or "quick run: nothing written" in out or "wrote " in out, out[-3000:]
    return out


def test_every_benchmark_is_smoke_tested():
    scripts = {p.stem for p in BENCHMARKS.glob("[a-z]*.py")}
    assert scripts == set(FAST + SLOW + OWN_TESTS)


@pytest.mark.parametrize("name", FAST)
def test_quick_mode_runs_and_writes_nothing(name, capsys, one_thread):
    before = {p: p.stat().st_mtime for p in (BENCHMARKS / "results").glob("*.json")}
    _quick(name, capsys)
    assert {p: p.stat().st_mtime for p in (BENCHMARKS / "results").glob("*.json")} == before


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_slow_quick_mode_runs(name, capsys, one_thread):
    _quick(name, capsys)


def test_quick_run_with_out_writes_the_results_format(tmp_path, capsys, one_thread):
    path = tmp_path / "nn.json"
    _quick("nearest_neighbour_mnist", capsys, "--out", str(path), "--seed", "3")
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["script"] == "benchmarks/nearest_neighbour_mnist.py"
    assert data["arguments"][-4:] == ["--out", str(path), "--seed", "3"] and data["quick"] is True
    assert data["seeds"] == [3] and "torch" in data["machine"] and len(data["rows"]) == 1


def test_experiments_share_the_entry_point():
    """``experiments/_common.py`` is the benchmarks' module, loaded from its one file."""
    spec = importlib.util.spec_from_file_location("_experiments_common", EXPERIMENTS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shared = sys.modules["_experiments_common"]
    assert Path(shared.__file__) == BENCHMARKS / "_common.py" and callable(shared.parser)


@pytest.mark.parametrize("tree", [BENCHMARKS, EXPERIMENTS])
def test_no_orphan_results_and_one_format(tree):
    """Every results file names a script of its own tree that exists, and carries the format's keys."""
    for path in sorted((tree / "results").glob("*.json")):
        data = json.loads(path.read_text())
        missing = [k for k in FORMAT_KEYS if k not in data] + ([] if "seed" in data or "seeds" in data else ["seed"])
        assert not missing, f"{path.name} lacks {missing}: run python benchmarks/_migrate_results.py {path}"
        script = REPO / data["script"]
        assert script.parent == tree and script.exists(), f"{path.name}: {data['script']} is not in {tree.name}/"
        # Files migrated after the fact (issue 22) never recorded their --name; their script is stamped.
        named = path.stem == script.stem or path.stem.startswith(script.stem + "_")
        assert named or data.get("arguments") or data.get("migrated"), (
            f"{path.name}: neither the script's name nor a recorded --name variant of {script.name}")


def test_no_script_repeats_the_path_setup():
    for script in [*BENCHMARKS.glob("[a-z]*.py"), *EXPERIMENTS.glob("[a-z]*.py")]:
        text = script.read_text()
        assert "sys.path.insert" not in text and "argparse.ArgumentParser(" not in text, script.name


def test_mode_tracking_islands_give_each_runs_share_of_known_clusters(capsys, one_thread):
    tracking = importlib.import_module("smc_mode_tracking")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(96, 2, generator=g) * 0.1, torch.randn(96, 2, generator=g) * 0.1 + 5.0
    # Run 0 sits wholly on island A; run 1 has a quarter of its particles on A, the rest on B.
    final = torch.stack([a[:64], torch.cat([a[64:80], b[:48]])])
    shares, centres, spreads = tracking._islands(final, 2, seed=0)
    assert shares.tolist() == [[1.0, 0.0], [0.25, 0.75]]  # island 0 holds the larger pooled share (0.625)
    assert torch.allclose(centres[1], torch.tensor([5.0, 5.0]), atol=0.1) and (spreads < 0.15).all()
    out = _quick("smc_mode_tracking", capsys, "--islands", "2")
    assert "2 islands of the final particles" in out and "island_1" in out
    assert tracking.main(["--quick", "--islands", "-1"]) == 2
    assert "--islands must be in 0..128" in capsys.readouterr().err
