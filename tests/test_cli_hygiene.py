"""Output hygiene (issue 20): argparse errors are one line; --quiet prints the result path and nothing else."""

from __future__ import annotations

import logging

import pytest

from ppl_audit import cli, diagnostics
from tests.test_cli import TINY_SIZES, _fast_yield, assert_user_error, tiny  # noqa: F401 - fixtures


@pytest.mark.parametrize("argv,needles", [
    ([], ["the following arguments are required: COMMAND", "see ppl-audit --help"]),
    (["bogus"], ["invalid choice: 'bogus'"]),
    (["levelset", "--target", "a,b", "--out", "x"], ["levelset: argument --target", "see ppl-audit levelset --help"]),
    (["levelset", "--target", "0.5,0.5", "--out", "x", "--particles", "many"], ["argument --particles: invalid int"]),
    (["levelset", "--target", "0.5,0.5"], ["required: --out"]),
    (["ood", "folder", "--out", "x", "--reference", "1.5"], ["ood: argument --reference"]),
    (["train"], ["train: the following arguments are required: card"]),
    (["run", "a.toml", "--out", "x", "--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
])
def test_argparse_errors_are_one_line_and_exit_2(argv, needles, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert out == "" and "usage:" not in err
    assert_user_error(info.value.code, err, *needles)


def test_quiet_prints_only_the_result_path_even_when_arviz_would_warn(tmp_path, tiny, capfd):  # noqa: F811
    # Two mh steps keep one draw per chain: ArviZ logs "Shape validation failed" for every summary, through
    # a handler bound to the process's stderr at import (so capfd, not capsys, sees it).
    out = tmp_path / "OUT"
    status = cli.main(["levelset", "--target", "0.5,0.5", *tiny, "--method", "mh", "--steps", "2",
                       "--out", str(out), "--quiet"])
    stdout, err = capfd.readouterr()
    assert status == 0 and err == "" and stdout == f"{out}\n"


def test_arviz_log_lines_go_through_the_package_logger(caplog):
    az = diagnostics._arviz()
    with caplog.at_level(logging.WARNING):
        az._log.warning("Shape validation failed: input_shape: (1, 1)")  # harmless: the summary says so
        az._log.warning("something new")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["ArviZ: something new"]
    assert all(r.name == "ppl_audit.diagnostics" for r in caplog.records)
