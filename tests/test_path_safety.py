"""Names are names, and --out never deletes what ppl-audit did not write (issue 20's severe defects)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ppl_audit.cards import load_card, parse_card
from ppl_audit.errors import AuditFileError
from tests.test_cli import TINY_SIZES, assert_user_error, run_cli

ESCAPING_NAMES = ["../../../../elsewhere/hr", "/abs/elsewhere/hr", "a/../../b", ".hidden", "..", "x" * 101,
                  "C:\\evil", "name with space", "caf\u00e9"]


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def card_named(tiny_card_file: Path, name: str, folder: Path) -> Path:
    text = tiny_card_file.read_text().replace('name = "house-rocket-cnn"', f"name = {json.dumps(name)}", 1)
    path = folder / "card.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_a_card_name_that_is_not_one_path_component_is_refused(name, tiny_card_file):
    text = tiny_card_file.read_text().replace('name = "house-rocket-cnn"', f"name = {json.dumps(name)}", 1)
    with pytest.raises(AuditFileError, match=r"x\.toml: \[model\] name .* must be letters, digits"):
        parse_card(text, source="x.toml")


@pytest.mark.parametrize("name", ["../models/mnist-vae", "/etc/passwd", "..", ".hidden"])
def test_a_card_looked_up_by_name_cannot_climb_out_of_the_shipped_cards(name):
    with pytest.raises(AuditFileError, match="no model card named|not valid TOML|does not exist"):
        load_card(name)


@pytest.mark.parametrize("command", ["train", "levelset"])
@pytest.mark.parametrize("name", ["../../../../elsewhere/hr", "/abs/elsewhere/hr"])
def test_train_and_audits_refuse_an_escaping_card_name_and_write_nothing(command, name, tmp_path, tiny_card_file,
                                                                         capsys):
    work = tmp_path / "work"
    (work / "cache").mkdir(parents=True)
    card = card_named(tiny_card_file, name, work)
    before = tree(tmp_path)
    argv = (["train", card, "--cache-dir", work / "cache", "--out", work / "reports"] if command == "train" else
            ["levelset", "--target", "0.5,0.5", "--classifier", card, *TINY_SIZES, "--cache-dir", work / "cache",
             "--out", work / "OUT"])
    start = time.perf_counter()
    status, _, err = run_cli(argv, capsys)
    assert_user_error(status, err, "[model] name", "must be letters, digits")
    assert time.perf_counter() - start < 5  # refused before any training or sampling
    assert tree(tmp_path) == before
    assert not Path("/abs").exists()


@pytest.mark.parametrize("name", ["../x", "/abs", "a.b", "x" * 101])
def test_a_target_name_that_is_not_a_file_stem_is_refused(name, tmp_path, tiny, capsys):
    status, _, err = run_cli(["levelset", "--target", "0.5,0.5", "--name", name, *tiny, "--out", tmp_path / "OUT"],
                             capsys)
    assert_user_error(status, err, "target name")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- --out


@pytest.fixture
def tiny(tiny_card_file, tiny_classifier):
    return ["--classifier", str(tiny_card_file), *TINY_SIZES, "--quiet"]


def test_out_holding_a_report_json_and_the_users_files_is_refused_at_once(tmp_path, tiny, capsys):
    out = tmp_path / "project"
    (out / "src").mkdir(parents=True)
    (out / "report.json").write_text('{"schema_version": 1, "kind": "levelset"}')
    (out / "src" / "main.py").write_text("print('mine')")
    (out / "thesis.tex").write_text("precious")
    before = tree(tmp_path)
    start = time.perf_counter()
    status, _, err = run_cli(["levelset", "--target", "0.5,0.5", *tiny, "--out", out], capsys)
    assert_user_error(status, err, "refusing to overwrite", "did not write it")
    assert time.perf_counter() - start < 5
    assert tree(tmp_path) == before


def test_a_file_added_to_an_old_report_folder_survives_the_next_run(tmp_path, tiny, capsys):
    out = tmp_path / "OUT"
    args = ["levelset", "--target", "0.5,0.5", *tiny, "--out", out]
    assert run_cli(args, capsys)[0] == 0
    (out / "my-notes.md").write_text("mine")
    status, _, err = run_cli(args, capsys)
    assert_user_error(status, err, "refusing to overwrite", "my-notes.md", "--force")
    assert run_cli([*args, "--seed", "1", "--force"], capsys)[0] == 0
    assert (out / "my-notes.md").read_text() == "mine"
    assert json.loads((out / "report.json").read_text())["provenance"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]


# --------------------------------------------------------------------------- destinations checked before work


@pytest.mark.parametrize("where, words", [
    (lambda tmp: Path("/proc/ppl-audit-report"), ["cannot write in /proc"]),
    (lambda tmp: tmp / "a-file" / "OUT", ["a-file is a file, not a folder"]),
    (lambda tmp: tmp / ("x" * 300), ["too long for the file system"]),
])
def test_an_unwritable_out_fails_in_a_second_not_after_the_run(where, words, tmp_path, tiny, capsys):
    (tmp_path / "a-file").write_text("mine")
    out = where(tmp_path)
    start = time.perf_counter()
    status, _, err = run_cli(["levelset", "--target", "0.5,0.5", *tiny, "--out", out], capsys)
    assert_user_error(status, err, *words)
    assert time.perf_counter() - start < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_cache_folder_that_is_a_file_fails_before_training(tmp_path, tiny_card_file, capsys):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    start = time.perf_counter()
    status, _, err = run_cli(["train", tiny_card_file, "--cache-dir", cache, "--no-report", "--quiet"], capsys)
    assert_user_error(status, err, "weights cache", "exists and is not a folder")
    assert time.perf_counter() - start < 5
    assert cache.read_text() == "not a folder"


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "hip", "vulkan", "ipu", "xla", "tpu"])
def test_a_device_the_toolkit_cannot_run_on_is_one_line(device, tmp_path, tiny_card_file, capsys):
    status, _, err = run_cli(["train", tiny_card_file, "--device", device, "--cache-dir", tmp_path, "--no-report"],
                             capsys)
    assert_user_error(status, err, f"device={device!r}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_fails_before_training(tmp_path, tiny_card_file, capsys):
    status, _, err = run_cli(["train", tiny_card_file, "--device", "cuda", "--cache-dir", tmp_path, "--no-report"],
                             capsys)
    assert_user_error(status, err, "CUDA is not available")
    assert list(tmp_path.iterdir()) == []
