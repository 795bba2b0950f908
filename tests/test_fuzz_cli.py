"""Property-based: every command line either runs or is one ``ppl-audit: error:`` line and exit 2 (issue 20).

The work behind a valid command (sampling, training, scoring) is replaced by a stub that only records
that validation passed: these tests are about validation, which must finish before any work starts.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppl_audit import cli
from tests.fuzz_support import JUNK, NUMBER_TEXT, fuzz_settings, one_user_error_line

LEVELSET_FLAGS = {
    "--target": st.one_of(st.sampled_from(["0.5,0.5", "1e-50,0.9999999999999", "0,1", "0.3,0.7", "1,0,0", "a,b",
                                           ",", "0.5", "nan,nan", "-0.5,1.5", "0.1," * 9 + "0.1"]), JUNK),
    "--concentration": NUMBER_TEXT, "--sigma": NUMBER_TEXT, "--particles": NUMBER_TEXT, "--steps": NUMBER_TEXT,
    "--samples": NUMBER_TEXT, "--seed": NUMBER_TEXT,
    "--relaxation": st.sampled_from(["dirichlet", "gaussian", "laplace", ""]),
    "--method": st.sampled_from(["smc", "mh", "hmc", "nuts", "svi", "magic"]),
    "--world": st.sampled_from(["house-rocket", "house-rocket-circle", "mnist-vae", "mnist-gan", "nope", "../x"]),
    "--name": st.one_of(st.sampled_from(["t", "../../x", "/abs", ".hidden", "a" * 120]), JUNK),
    "--device": st.sampled_from(["cpu", "auto", "cuda", "mps", "xla", "meta", "cuda:7", "", "cpu:0"]),
    "--classifier": st.sampled_from(["house-rocket-cnn", "mnist-lenet5", "nope", "../models/x", "/etc/passwd"]),
}
OOD_FLAGS = {"--reference": NUMBER_TEXT, "--seed": NUMBER_TEXT, "--device": LEVELSET_FLAGS["--device"],
             "--ensemble": st.sampled_from(["mnist-vae-ensemble", "nope", "../x", ""]),
             "--gan-ensemble": st.sampled_from(["", "mnist-gan-ensemble", "nope"])}


def validated(*args, **kwargs):
    """Stands in for the work of a command whose inputs all passed validation."""
    raise SystemExit(0)


@pytest.fixture
def stubbed(monkeypatch):
    """Replace the work behind each command by a record that it was reached."""
    reached = []
    monkeypatch.setattr(cli, "_run_audit",
                        lambda spec, seed, args, progress, settings=None: reached.append(spec) or 0)
    import ppl_audit.audits.ood as ood

    monkeypatch.setattr(ood, "score_folder", validated)
    return reached


def run(argv, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, err


def flags(table):
    return st.lists(st.sampled_from(sorted(table)), max_size=6, unique=True).flatmap(
        lambda names: st.tuples(*(st.tuples(st.just(n), table[n]) for n in names)))


@fuzz_settings(max_examples=500)
@given(pairs=flags(LEVELSET_FLAGS), quiet=st.booleans())
def test_levelset_command_lines(pairs, quiet, stubbed, tmp_path, capsys):
    argv = ["levelset", "--out", str(tmp_path / "OUT"), "--target", "0.5,0.5"]
    for name, value in pairs:
        argv.append(f"{name}={value}")
    status, err = run(argv + (["--quiet"] if quiet else []), capsys)
    one_user_error_line(status, err)


@fuzz_settings(max_examples=200)
@given(pairs=flags(OOD_FLAGS), folder=st.sampled_from(["", "missing", "."]))
def test_ood_command_lines(pairs, folder, stubbed, tmp_path, capsys):
    argv = ["ood", str(tmp_path / folder), "--out", str(tmp_path / "OUT")] + [f"{n}={v}" for n, v in pairs]
    status, err = run(argv, capsys)
    one_user_error_line(status, err)


@fuzz_settings(max_examples=150)
@given(argv=st.lists(st.one_of(st.sampled_from(["demo", "run", "train", "levelset", "ood", "--out", "--force",
                                                "--quiet", "--seed", "--device", "--cache-dir", "-x", "--",
                                                "--retrain", "--no-report", "--version=1"]), JUNK), max_size=6))
def test_arbitrary_argument_lists(argv, stubbed, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative --out and card paths land in the test's folder
    import ppl_audit.training as training

    monkeypatch.setattr(training, "load_model", validated)
    status, err = run([a for a in argv if a not in ("--help", "-h")], capsys)
    if status == 0 and err.startswith("ppl-audit "):  # --version
        return
    one_user_error_line(status, err)
