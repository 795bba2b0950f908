"""Tests of the ``ppl-audit`` command line: reports, user errors, the weights cache, help.

The CLI runs in-process through :func:`ppl_audit.cli.main` (one subprocess
test checks ``python -m ppl_audit``). Every audit uses the tiny model card of
``conftest.py`` and tiny sizes; the baseline yield's prior draws are cut from
20,000 to 500 per world.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ppl_audit
from ppl_audit import cli
from ppl_audit.audits import levelset as levelset_audit
from ppl_audit.cache import load_weights
from ppl_audit.classifiers import house_rocket
from ppl_audit.errors import ModelOutputError, WeightsError

TINY_SIZES = ["--particles", "32", "--steps", "8", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _fast_yield(monkeypatch):
    monkeypatch.setattr(levelset_audit, "YIELD_PRIOR_DRAWS", 500)


@pytest.fixture
def tiny(tiny_card_file, tiny_classifier):
    """CLI arguments for a tiny level-set run (the tiny classifier is already in the cache)."""
    return ["--classifier", str(tiny_card_file), *TINY_SIZES]


def run_cli(argv, capsys):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def assert_user_error(status, err, *needles):
    """Exit status 2 and exactly one line ``ppl-audit: error: ...`` on stderr that names the problem."""
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ppl-audit: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_nothing_written(parent: Path, name: str = "OUT"):
    """No report folder and no leftover temporary (``.OUT.tmp-*``) or backup (``.OUT.old-*``) folder."""
    assert not (parent / name).exists()
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]
    assert leftovers == []


# --------------------------------------------------------------------------- levelset


def test_levelset_end_to_end(tmp_path, tiny, capsys):
    out = tmp_path / "OUT"
    status, stdout, err = run_cli(
        ["levelset", "--target", "0.3,0.7", "--name", "mostly-house", "--concentration", "20", *tiny,
         "--samples", "16", "--seed", "3", "--out", out, "--quiet"], capsys)
    assert status == 0, err
    assert err == ""  # --quiet: no progress, no summary line
    for name in ("report.html", "report.md", "report.json", "timings.json"):
        assert (out / name).is_file(), name
    assert (out / "figures").is_dir()
    doc = json.loads((out / "report.json").read_text())
    assert doc["kind"] == "levelset"
    assert doc["title"] == "Level set 'mostly-house' on house-rocket"
    entry = doc["metrics"]["worlds"]["house-rocket"]["targets"]["mostly-house"]
    assert entry["target"] == [0.3, 0.7]
    assert entry["concentration"] == 20.0
    assert entry["num_samples"] == 16
    assert doc["provenance"]["seed"] == 3
    spec = doc["provenance"]["spec"]
    assert (spec["num_particles"], spec["num_steps"], spec["num_samples"]) == (32, 8, 16)
    assert spec["classifier"].endswith("tiny-house-rocket.toml")
    for name in entry["figures"]:
        assert (out / "figures" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert json.loads((out / "figures" / f"{name}.json").read_text())["name"] == name
    html = (out / "report.html").read_text()
    assert "Level set" in html and "data:image/png;base64," in html
    assert "mostly-house" in (out / "report.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["OUT"]  # no temporary folder left beside OUT


def test_levelset_same_seed_same_bytes_and_previous_report_replaced(tmp_path, tiny, capsys):
    args = ["levelset", "--target", "0.5,0.5", *tiny, "--quiet"]
    assert run_cli([*args, "--out", tmp_path / "a"], capsys)[0] == 0
    assert run_cli([*args, "--out", tmp_path / "b"], capsys)[0] == 0
    first = (tmp_path / "a" / "report.json").read_bytes()
    assert (tmp_path / "b" / "report.json").read_bytes() == first
    # An existing report folder is replaced by the new report.
    assert run_cli([*args, "--seed", "1", "--out", tmp_path / "a"], capsys)[0] == 0
    replaced = (tmp_path / "a" / "report.json").read_bytes()
    assert replaced != first
    assert json.loads(replaced)["provenance"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


BAD_LEVELSET = {
    "wrong-length": (["--target", "0.2,0.3,0.5"], ["target", "3 entries"]),
    "negative": (["--target=-0.5,1.5"], ["target", "negative"]),
    "not-summing-to-1": (["--target", "0.3,0.3"], ["target", "sum to 1"]),
    "exact-0-and-1": (["--target", "0,1"], ["target", "exactly 0 or 1"]),
    "non-finite": (["--target", "nan,nan"], ["target", "non-finite"]),
    "concentration-0": (["--target", "0.5,0.5", "--concentration", "0"], ["concentration", "0"]),
    "concentration-negative": (["--target", "0.5,0.5", "--concentration=-1"], ["concentration", "-1"]),
    "concentration-nan": (["--target", "0.5,0.5", "--concentration", "nan"], ["concentration"]),
    "particles-0": (["--target", "0.5,0.5", "--particles", "0"], ["num_particles", "0"]),
    "steps-0": (["--target", "0.5,0.5", "--steps", "0"], ["num_steps", "0"]),
    "samples-over-particles": (["--target", "0.5,0.5", "--particles", "8", "--samples", "9"], ["num_samples"]),
    "unknown-world": (["--target", "0.5,0.5", "--world", "mars"], ["unknown world 'mars'", "house-rocket"]),
    "bad-name": (["--target", "0.5,0.5", "--name", "a/b"], ["target name"]),
    "negative-seed": (["--target", "0.5,0.5", "--seed=-1"], ["--seed"]),
    "unknown-device": (["--target", "0.5,0.5", "--device", "tpu"], ["device", "tpu"]),
    "unknown-card": (["--target", "0.5,0.5", "--classifier", "no-such-card"], ["no-such-card"]),
    "missing-card-file": (["--target", "0.5,0.5", "--classifier", "missing.toml"], ["missing.toml", "does not exist"]),
}


@pytest.mark.parametrize("args, needles", BAD_LEVELSET.values(), ids=BAD_LEVELSET.keys())
def test_levelset_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needles, capsys):
    status, stdout, err = run_cli(["levelset", *args, "--out", tmp_path / "OUT"], capsys)
    assert_user_error(status, err, *needles)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("target", ["a,b", "0.5,", "", "0.5;0.5"])
def test_levelset_non_numeric_target_is_an_argparse_error(tmp_path, target, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["levelset", "--target", target, "--out", str(tmp_path / "OUT")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "argument --target" in err and "comma-separated numbers" in err
    assert_nothing_written(tmp_path)


def test_missing_required_arguments_exit_2(tmp_path, capsys):
    for argv in ([], ["levelset", "--out", str(tmp_path / "OUT")], ["levelset", "--target", "0.5,0.5"], ["run"],
                 ["bogus"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and "error:" in err
    assert_nothing_written(tmp_path)


def test_out_pointing_at_an_unrelated_folder_is_refused(tmp_path, tiny, capsys):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    status, _, err = run_cli(["levelset", "--target", "0.5,0.5", *tiny, "--out", out, "--quiet"], capsys)
    assert_user_error(status, err, "refusing to overwrite", str(out))
    assert (out / "notes.txt").read_text() == "precious"
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["OUT"]  # no .OUT.tmp-* left


def test_out_pointing_at_a_file_is_refused(tmp_path, tiny, capsys):
    out = tmp_path / "OUT"
    out.write_text("a file")
    status, _, err = run_cli(["levelset", "--target", "0.5,0.5", *tiny, "--out", out, "--quiet"], capsys)
    assert_user_error(status, err, "not a folder")
    assert out.read_text() == "a file"
    assert [p.name for p in tmp_path.iterdir()] == ["OUT"]


# --------------------------------------------------------------------------- run


def _audit_file(path: Path, card: Path, *, seed=5, extra="") -> Path:
    path.write_text(
        f"""# a tiny audit
[audit]
kind = "levelset"
title = "Tiny audit"
seed = {seed}
worlds = ["house-rocket"]
classifier = "{card.as_posix()}"
num_particles = 32
num_steps = 8
num_samples = 32
num_prior_samples = 50
device = "cpu"
{extra}
[[targets]]
name = "ambiguous"
probabilities = [0.5, 0.5]
concentration = 10.0
"""
    )
    return path


def test_run_audit_file(tmp_path, tiny_card_file, tiny_classifier, capsys):
    audit = _audit_file(tmp_path / "tiny.toml", tiny_card_file)
    out = tmp_path / "reports" / "tiny"  # the parent is created
    status, _, err = run_cli(["run", audit, "--out", out], capsys)  # not --quiet: a summary line
    assert status == 0, err
    assert f"report written to {out}/report.html" in err
    doc = json.loads((out / "report.json").read_text())
    assert doc["title"] == "Tiny audit"
    assert doc["provenance"]["seed"] == 5  # the file's seed
    assert doc["provenance"]["spec"]["num_particles"] == 32
    assert doc["metrics"]["worlds"]["house-rocket"]["targets"]["ambiguous"]["target"] == [0.5, 0.5]
    assert doc["metrics"]["classifier"]["recipe_hash"] == tiny_classifier.info["recipe_hash"]
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["tiny"]


def test_run_takes_the_settings_a_warning_names(tmp_path, tiny_card_file, tiny_classifier, capsys):
    """--particles and --sampler-option override the file's num_particles and sampler_options."""
    audit = _audit_file(tmp_path / "tiny.toml", tiny_card_file)
    out = tmp_path / "r"
    status, _, err = run_cli(["run", audit, "--out", out, "--particles", "48", "--method", "smc",
                              "--sampler-option", "max_rounds=1", "--sampler-option", "move=rw", "--quiet"], capsys)
    assert status == 0, err
    spec = json.loads((out / "report.json").read_text())["provenance"]["spec"]
    assert spec["num_particles"] == 48 and spec["sampler_options"] == {"max_rounds": 1, "move": "rw"}


@pytest.mark.parametrize("flags, needles", [
    (["--sampler-option", "max_rounds"], ["--sampler-option takes KEY=VALUE", "max_rounds"]),
    (["--sampler-option", "max_rounds=9"], ["max_rounds", "1..5", "9"]),
    (["--sampler-option", "nonsense=1"], ["nonsense"]),
    (["--particles", "0"], ["num_particles"]),
])
def test_bad_overrides_are_one_line_before_any_work(tmp_path, tiny_card_file, tiny_classifier, flags, needles,
                                                   capsys):
    audit = _audit_file(tmp_path / "tiny.toml", tiny_card_file)
    status, _, err = run_cli(["run", audit, "--out", tmp_path / "OUT", *flags], capsys)
    assert_user_error(status, err, *needles)
    assert_nothing_written(tmp_path)


BAD_AUDIT_FILES = {
    "typo": ('[audit]\nkind = "levelset"\nnum_particle = 3\n', ["unknown key", "num_particle"]),
    "unknown-kind": ('[audit]\nkind = "nope"\n', ["kind", "nope"]),
    "missing-audit": ('[[targets]]\nname = "a"\nprobabilities = [0.5, 0.5]\n', ["missing table [audit]"]),
    "invalid-toml": ("[audit\n", ["not valid TOML"]),
    "bad-target": ('[audit]\nkind = "levelset"\n[[targets]]\nname = "a"\nprobabilities = [0.3, 0.3]\n',
                   ["sum to 1"]),
    "concentration-0": ('[audit]\nkind = "levelset"\n[[targets]]\nname = "a"\nprobabilities = [0.5, 0.5]\n'
                        "concentration = 0\n", ["concentration"]),
}


@pytest.mark.parametrize("text, needles", BAD_AUDIT_FILES.values(), ids=BAD_AUDIT_FILES.keys())
def test_run_malformed_audit_file_exit_2(tmp_path, text, needles, capsys):
    audit = tmp_path / "bad.toml"
    audit.write_text(text)
    status, _, err = run_cli(["run", audit, "--out", tmp_path / "OUT"], capsys)
    assert_user_error(status, err, str(audit), *needles)
    assert_nothing_written(tmp_path)


def test_run_nonexistent_audit_file_exit_2(tmp_path, capsys):
    status, _, err = run_cli(["run", tmp_path / "nope.toml", "--out", tmp_path / "OUT"], capsys)
    assert_user_error(status, err, "nope.toml", "does not exist")
    assert_nothing_written(tmp_path)


def test_run_audit_file_with_missing_card_exit_2(tmp_path, capsys):
    audit = _audit_file(tmp_path / "a.toml", tmp_path / "missing-card.toml")
    status, _, err = run_cli(["run", audit, "--out", tmp_path / "OUT", "--quiet"], capsys)
    assert_user_error(status, err, "missing-card.toml", "does not exist")
    assert_nothing_written(tmp_path)


# --------------------------------------------------------------------------- train and the cache

# 0.85: the tiny card's floor (conftest.TINY_ACCURACY_FLOOR), not the shipped 0.97
ACCURACY = re.compile(r"^house-rocket-cnn: test accuracy (\d\.\d{4}) \(expected >= 0\.85\), weights (\S+) ")


def _train(cache: Path, card: Path, capsys):
    status, out, err = run_cli(["train", card, "--cache-dir", cache, "--quiet", "--no-report"], capsys)
    assert status == 0, err
    match = ACCURACY.match(out)
    assert match, out
    return float(match.group(1)), Path(match.group(2))


def _sidecar_sha(weights: Path) -> str:
    return json.loads(weights.with_suffix(".json").read_text())["sha256"]


def _file_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_prints_accuracy_then_uses_the_cache(tmp_path, tiny_card_file, monkeypatch, capsys):
    cache = tmp_path / "cache"
    accuracy, weights = _train(cache, tiny_card_file, capsys)
    assert 0.8 < accuracy <= 1.0
    assert weights.parent == cache and weights.suffix == ".safetensors"
    assert sorted(p.name for p in cache.iterdir()) == sorted([weights.name, weights.with_suffix(".json").name])
    assert _sidecar_sha(weights) == _file_sha(weights)
    before = weights.read_bytes()
    with monkeypatch.context() as mp:
        def no_training(*args, **kwargs):
            raise AssertionError("trained again although the weights are cached")

        mp.setattr(house_rocket, "train_house_rocket_classifier", no_training)
        again, weights_again = _train(cache, tiny_card_file, capsys)
    assert (again, weights_again) == (accuracy, weights)
    assert weights.read_bytes() == before


class _Tripwire:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _flip_middle(path: Path, marker: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 32] = bytes(b ^ 0xFF for b in data[mid:mid + 32])
    path.write_bytes(bytes(data))


def _truncate(path: Path, marker: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _pickle_with_matching_checksum(path: Path, marker: Path) -> None:
    """A pickle in place of the weights, with the sidecar's checksum updated to match it."""
    path.write_bytes(pickle.dumps({"weight": _Tripwire(str(marker))}))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["sha256"] = _file_sha(path)
    path.with_suffix(".json").write_text(json.dumps(sidecar))


def _bad_header_with_matching_checksum(path: Path, marker: Path) -> None:
    """A safetensors header length that points past the end of the file; checksum updated to match."""
    data = bytearray(path.read_bytes())
    data[:8] = (len(data) * 2).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["sha256"] = _file_sha(path)
    path.with_suffix(".json").write_text(json.dumps(sidecar))


def _copy_tiny_weights(tiny_classifier, cache: Path) -> Path:
    """Copy the session's cached tiny weights and sidecar into ``cache`` (saves a training run)."""
    cache.mkdir()
    source = Path(tiny_classifier.weights_path)
    weights = cache / source.name
    weights.write_bytes(source.read_bytes())
    weights.with_suffix(".json").write_bytes(source.with_suffix(".json").read_bytes())
    return weights


@pytest.mark.parametrize("corrupt", [_flip_middle, _truncate, _pickle_with_matching_checksum,
                                     _bad_header_with_matching_checksum],
                         ids=["flipped-bytes", "truncated", "pickle", "bad-header"])
def test_load_weights_rejects_corrupt_files_without_unpickling(tmp_path, tiny_classifier, corrupt):
    weights = _copy_tiny_weights(tiny_classifier, tmp_path / "cache")
    load_weights(weights)  # the copy verifies
    marker = tmp_path / "unpickled"
    corrupt(weights, marker)
    with pytest.raises(WeightsError, match="corrupt|cannot be read as safetensors") as info:
        load_weights(weights)
    assert str(weights) in str(info.value)
    assert not marker.exists(), "a corrupt weights file was unpickled"


def test_load_weights_missing_or_corrupt_sidecar(tmp_path, tiny_classifier):
    weights = _copy_tiny_weights(tiny_classifier, tmp_path / "cache")
    weights.with_suffix(".json").write_text("{not json")
    with pytest.raises(WeightsError, match="sidecar"):
        load_weights(weights)
    weights.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match="missing"):
        load_weights(weights)


# Each case retrains the tiny classifier (a few seconds): one checksum failure, one file that
# passes the checksum but is not safetensors (a pickle that would leave a marker if unpickled).
@pytest.mark.parametrize("corrupt", [_flip_middle, _pickle_with_matching_checksum], ids=["flipped-bytes", "pickle"])
def test_train_rebuilds_corrupt_weights_without_unpickling(
    tmp_path, tiny_card_file, tiny_classifier, cache_root, corrupt, capsys, caplog
):
    assert Path(tiny_classifier.weights_path).parent == cache_root
    cache = tmp_path / "cache"
    weights = _copy_tiny_weights(tiny_classifier, cache)
    good_keys = set(load_weights(weights)[0])

    marker = tmp_path / "unpickled"
    corrupt(weights, marker)
    with pytest.raises(WeightsError):
        load_weights(weights)
    assert not marker.exists()

    with caplog.at_level(logging.WARNING, logger="ppl_audit"):
        accuracy, rebuilt = _train(cache, tiny_card_file, capsys)
    assert rebuilt == weights
    assert "rebuilding" in caplog.text
    assert not marker.exists(), "a corrupt weights file was unpickled"
    assert 0.8 < accuracy <= 1.0
    assert _sidecar_sha(weights) == _file_sha(weights)
    state, info = load_weights(weights)  # verifies the checksum and the safetensors header
    assert set(state) == good_keys
    assert info["recipe_hash"] == tiny_classifier.info["recipe_hash"]
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_train_missing_card_exit_2(tmp_path, capsys):
    status, _, err = run_cli(["train", tmp_path / "nope.toml", "--cache-dir", tmp_path / "cache"], capsys)
    assert_user_error(status, err, "nope.toml", "does not exist")
    assert not (tmp_path / "cache").exists()


def test_train_malformed_card_exit_2(tmp_path, capsys):
    card = tmp_path / "card.toml"
    card.write_text('[model]\nname = "x"\nkind = "house-rocket-classifier"\n')
    status, _, err = run_cli(["train", card, "--cache-dir", tmp_path / "cache"], capsys)
    assert_user_error(status, err, str(card), "missing table [architecture]")


# --------------------------------------------------------------------------- train: every kind, data, reports

ELBO_LINE = re.compile(r"^mnist-vae: test ELBO \(nats per image\) (-\d+\.\d{4}) \(expected >= -\d+\), weights (\S+) ")


@pytest.mark.usefixtures("one_thread")
def test_train_vae_prints_metrics_and_writes_the_report(tmp_path, tiny_mnist_card, tiny_mnist_model, card_file,
                                                        mnist_fixture_dir, cache_root, capsys):
    trained = tiny_mnist_model("mnist-vae")  # cached once per session
    card = card_file(tiny_mnist_card("mnist-vae"))
    out = tmp_path / "report"
    status, stdout, err = run_cli(["train", card, "--data-dir", mnist_fixture_dir, "--cache-dir", cache_root,
                                   "--out", out, "--quiet"], capsys)
    assert status == 0, err
    match = ELBO_LINE.match(stdout)
    assert match, stdout
    assert float(match.group(1)) == pytest.approx(trained.metrics["test_elbo_nats"], abs=1e-4)
    assert Path(match.group(2)) == trained.weights_path
    assert "test_kl_nats" in stdout and f"training report: {out}/report.html" in stdout
    doc = json.loads((out / "report.json").read_text())
    assert doc["kind"] == "training" and doc["provenance"]["recipe_hash"] == trained.card.recipe_hash
    assert doc["metrics"]["test_elbo_nats"] == pytest.approx(trained.metrics["test_elbo_nats"])
    for name in ("samples", "latent_traversal", "curve_1"):
        assert (out / "figures" / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name


@pytest.mark.usefixtures("one_thread")
def test_train_reads_the_data_folder_from_the_environment(tmp_path, tiny_mnist_card, card_file, mnist_fixture_dir,
                                                         monkeypatch, capsys):
    monkeypatch.setenv("PPL_AUDIT_DATA", str(mnist_fixture_dir))
    card = card_file(tiny_mnist_card("mnist-lenet5", training={"seed": 7}))  # a fresh recipe: trains now
    status, stdout, err = run_cli(["train", card, "--cache-dir", tmp_path / "cache", "--device", "cpu",
                                   "--no-report", "--quiet"], capsys)
    assert status == 0, err
    assert stdout.startswith("mnist-lenet5: test accuracy ") and "(expected >= 0.0)" in stdout  # the tiny card's floor
    assert len(list((tmp_path / "cache").glob("mnist-lenet5-*.safetensors"))) == 1


@pytest.mark.usefixtures("one_thread")
def test_train_below_the_cards_floor_exit_2_and_caches_nothing(tmp_path, tiny_mnist_card, card_file,
                                                              mnist_fixture_dir, capsys):
    card = card_file(tiny_mnist_card("mnist-lenet5", training={"seed": 8}, expected={"min_test_accuracy": 0.99}))
    cache, out = tmp_path / "cache", tmp_path / "OUT"
    status, stdout, err = run_cli(["train", card, "--data-dir", mnist_fixture_dir, "--cache-dir", cache,
                                   "--device", "cpu", "--out", out, "--quiet"], capsys)
    # one line naming the model, the metric, its value and the floor
    assert_user_error(status, err, "training of mnist-lenet5 missed", "test_accuracy 0.",
                      "is below the card's min_test_accuracy 0.99", "nothing was cached")
    assert stdout == ""
    assert not cache.exists() or list(cache.iterdir()) == []  # no weights, no sidecar, no temporaries
    assert_nothing_written(tmp_path)


@pytest.mark.usefixtures("one_thread")
def test_train_default_report_folder_is_reports_train_name(tmp_path, tiny_mnist_card, tiny_mnist_model, card_file,
                                                           cache_root, monkeypatch, capsys):
    tiny_mnist_model("mnist-gan")
    card = card_file(tiny_mnist_card("mnist-gan"))
    monkeypatch.chdir(tmp_path)
    status, stdout, err = run_cli(["train", card, "--cache-dir", cache_root, "--quiet"], capsys)
    assert status == 0, err
    assert stdout.startswith("mnist-gan: critic gap, test images - generated ")
    assert (tmp_path / "reports" / "train-mnist-gan" / "figures" / "samples.png").is_file()


@pytest.mark.usefixtures("one_thread")
def test_train_missing_data_exit_2_names_where_it_looked(tmp_path, tiny_mnist_card, card_file, monkeypatch, capsys):
    monkeypatch.delenv("PPL_AUDIT_DATA", raising=False)
    card = card_file(tiny_mnist_card("mnist-vae", training={"seed": 11}))
    empty = tmp_path / "data"
    empty.mkdir()
    args = ["train", card, "--cache-dir", tmp_path / "cache", "--out", tmp_path / "OUT", "--quiet"]
    status, _, err = run_cli([*args, "--data-dir", empty], capsys)
    assert_user_error(status, err, f"{empty}/mnist/t10k-images-idx3-ubyte.gz", "--data-dir")
    status, _, err = run_cli(args, capsys)
    assert_user_error(status, err, "no data folder given", "PPL_AUDIT_DATA")
    assert not (tmp_path / "cache").exists()
    assert_nothing_written(tmp_path)


@pytest.mark.usefixtures("one_thread")
def test_train_refuses_a_bad_report_folder_before_training(tmp_path, tiny_mnist_card, card_file, capsys):
    card = card_file(tiny_mnist_card("mnist-vae", training={"seed": 12}))
    (tmp_path / "file").write_text("x")
    status, _, err = run_cli(["train", card, "--cache-dir", tmp_path / "cache", "--out", tmp_path / "file"], capsys)
    assert_user_error(status, err, "exists and is not a folder")
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["demo"], ["levelset"], ["run"], ["train"]], ids=lambda c: c[0] if c else "top")
def test_help_exits_0(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ppl-audit{' ' + command[0] if command else ''}")
    if not command:
        for sub in ("demo", "levelset", "run", "train"):
            assert sub in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ppl-audit {ppl_audit.__version__}"


def test_python_dash_m_help_and_user_error(tmp_path):
    env = os.environ.copy()  # PPL_AUDIT_CACHE points at the session's private cache
    done = subprocess.run([sys.executable, "-m", "ppl_audit", "--help"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "levelset" in done.stdout and "train" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "ppl_audit", "levelset", "--target", "0.3,0.3", "--out", str(tmp_path / "OUT")],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ppl-audit: error: target must sum to 1 (tolerance 1e-06), sums to 0.6"
    ]
    assert_nothing_written(tmp_path)


# --------------------------------------------------------------------------- classifier output checks


def test_classifier_returning_nan_raises_model_output_error():
    world = ppl_audit.HouseRocketWorld()
    with pytest.raises(ModelOutputError, match="NaN"):
        ppl_audit.sample_level_set(world, lambda x: torch.full((len(x), 2), float("nan")), [0.5, 0.5],
                                   num_particles=8, num_steps=2, device="cpu")


def test_classifier_returning_logits_raises_model_output_error():
    world = ppl_audit.HouseRocketWorld()
    logits = lambda x: torch.stack([x.mean((1, 2, 3)) * 10, -x.mean((1, 2, 3)) * 10 + 3], -1)  # noqa: E731
    with pytest.raises(ModelOutputError, match="probabilities") as info:
        ppl_audit.sample_level_set(world, logits, [0.5, 0.5], num_particles=8, num_steps=2, device="cpu")
    assert "logits" in str(info.value)


@pytest.mark.parametrize(
    "fn, needle",
    [
        (lambda x: torch.full((len(x), 2), float("inf")), "inf"),
        (lambda x: torch.tensor([[1.5, -0.5]]).expand(len(x), 2), "negative"),
        (lambda x: torch.full((len(x), 3), 1 / 3), "shape"),
        (lambda x: torch.full((len(x) + 1, 2), 0.5), "shape"),
    ],
    ids=["inf", "negative", "three-classes", "wrong-batch"],
)
def test_classifier_returning_garbage_raises_model_output_error(fn, needle):
    with pytest.raises(ModelOutputError, match=needle):
        ppl_audit.sample_level_set(ppl_audit.HouseRocketWorld(), fn, [0.5, 0.5], num_particles=8, num_steps=2,
                                   device="cpu")


# --------------------------------------------------------------------------- values that once escaped
# Each used to escape as a plain exception (a traceback on the command line).

def test_huge_seed_is_a_user_error(tmp_path, tiny, capsys):
    status, _, err = run_cli(["levelset", "--target", "0.5,0.5", *tiny, "--seed", str(2**64 // 1000 + 1),
                              "--out", tmp_path / "OUT", "--quiet"], capsys)
    assert_user_error(status, err, "seed")


def test_non_string_classifier_in_audit_file(tmp_path, capsys):
    audit = tmp_path / "a.toml"
    audit.write_text('[audit]\nkind = "levelset"\nclassifier = 5\n')
    status, _, err = run_cli(["run", audit, "--out", tmp_path / "OUT", "--quiet"], capsys)
    assert_user_error(status, err, "classifier")


def test_levelset_with_smc_and_gaussian_relaxation(tmp_path, tiny_card_file, tiny_classifier, capsys):
    out = tmp_path / "smc"
    status, _, err = run_cli(["levelset", "--target", "0.2,0.8", "--classifier", tiny_card_file, "--method", "smc",
                              "--relaxation", "gaussian", "--sigma", "0.1", "--particles", 64, "--samples", 32,
                              "--out", out, "--quiet"], capsys)
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    entry = report["metrics"]["worlds"]["house-rocket"]["targets"]["target"]
    assert entry["method"] == "smc" and entry["nested_rhat_max"] is not None
    assert report["provenance"]["spec"]["method"] == "smc"
    assert any(name.endswith("_tempering") for name in entry["figures"])


def test_unknown_method_is_a_usage_error(tmp_path, tiny, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["levelset", "--target", "0.5,0.5", "--method", "magic", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2


def test_progress_draws_a_fresh_bar_when_a_finished_task_runs_again(capsys):
    from ppl_audit.cli import _Progress

    progress = _Progress()
    created = []
    real = progress._tqdm

    def spy(*args, **kwargs):
        created.append(kwargs["desc"])
        return real(*args, **kwargs)

    progress._tqdm = spy
    for run in range(2):  # e.g. the latent search of the VAEs, then of the GANs
        for done in range(1, 4):
            progress("latent search", done, 3)
    progress("training", 1, 2)
    progress("latent search", 1, 3)  # interrupted tasks restart too
    progress.close()
    assert created == ["latent search", "latent search", "training", "latent search"]
    assert progress._bars == {}
