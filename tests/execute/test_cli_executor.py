"""``--executor`` and ``--ray-address`` on the command line: one-line errors, exit 2, nothing written."""

from __future__ import annotations

import sys
import time

import pytest

from ppl_audit import cli

LEVELSET = ["levelset", "--target", "0.5,0.5", "--particles", "32", "--steps", "8", "--device", "cpu"]


def _cli(argv, capsys):
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("ppl-audit: error: "), err
    return status, lines[0]


def test_an_unknown_executor_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*LEVELSET, "--executor", "dask", "--out", str(tmp_path / "OUT")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--executor: invalid choice: 'dask'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "OUT").exists()


def test_an_unreachable_ray_address_is_one_line_and_does_not_hang(tmp_path, capsys):
    pytest.importorskip("ray")
    start = time.monotonic()
    status, line = _cli([*LEVELSET, "--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", tmp_path / "OUT"],
                        capsys)
    assert status == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in line
    assert time.monotonic() - start < 30  # refused at once, not Ray's own retries
    assert not (tmp_path / "OUT" / "report.json").exists()


def test_an_audit_file_asks_for_ray_and_the_flag_wins(tmp_path, capsys):
    pytest.importorskip("ray")
    audit = tmp_path / "a.toml"
    audit.write_text('[audit]\nkind = "levelset"\nworlds = ["house-rocket"]\nnum_particles = 32\nnum_samples = 32\n'
                     'executor = "ray"\nray_address = "127.0.0.1:1"\n')
    status, line = _cli(["run", audit, "--out", tmp_path / "OUT"], capsys)
    assert status == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in line
    status, line = _cli(["run", audit, "--ray-address", "127.0.0.1:2", "--out", tmp_path / "OUT"], capsys)
    assert status == 2 and "127.0.0.1:2" in line


def test_the_local_flag_runs_a_file_that_names_a_cluster_here(tmp_path, tiny_card_file):
    audit = tmp_path / "a.toml"
    audit.write_text(f'[audit]\nkind = "levelset"\nclassifier = "{tiny_card_file}"\nworlds = ["house-rocket"]\n'
                     'num_particles = 32\nnum_steps = 8\nnum_samples = 32\nnum_prior_samples = 20\ndevice = "cpu"\n'
                     'executor = "ray"\nray_address = "127.0.0.1:1"\n\n[[targets]]\nname = "ambiguous"\n'
                     "probabilities = [0.5, 0.5]\n")
    assert cli.main(["run", str(audit), "--executor", "local", "--quiet", "--out", str(tmp_path / "OUT")]) == 0
    assert (tmp_path / "OUT" / "report.json").exists()


def test_a_ray_address_without_the_ray_executor_is_refused(tmp_path, capsys):
    status, line = _cli([*LEVELSET, "--ray-address", "127.0.0.1:6379", "--out", tmp_path / "OUT"], capsys)
    assert status == 2 and "needs the ray executor (--executor ray)" in line


def test_without_ray_installed_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    status, line = _cli([*LEVELSET, "--executor", "ray", "--out", tmp_path / "OUT"], capsys)
    assert status == 2 and "pip install -e .[ray]" in line


def test_train_takes_the_executor_flags_with_their_errors(tmp_path, capsys):
    train = ["train", "mnist-gan-ensemble", "--cache-dir", tmp_path / "cache", "--out", tmp_path / "OUT"]
    status, line = _cli([*train, "--ray-address", "127.0.0.1:6379"], capsys)
    assert status == 2 and "needs the ray executor (--executor ray)" in line
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(a) for a in train] + ["--executor", "dask"])
    assert exit_.value.code == 2 and "--executor: invalid choice: 'dask'" in capsys.readouterr().err
    assert not (tmp_path / "OUT").exists() and not any((tmp_path / "cache").glob("*.safetensors"))
