"""An ensemble whose members train apart, trained inside a remote executor's block: one unit a member."""

from __future__ import annotations

import pytest

from ppl_audit.execute import use_executor
from ppl_audit.training import load_model
from tests.execute.kwargs_only import KwargsOnlyExecutor
from tests.test_training_members import CARD, _same_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_remote_executor_trains_each_member_as_a_unit(tmp_path, mnist_fixture_dir):
    executor = KwargsOnlyExecutor()
    with use_executor(executor):
        fanned = load_model(CARD, cache=tmp_path / "fanned", data_dir=mnist_fixture_dir, device="cpu")
    assert executor.tasks == [("training mnist-gan-ensemble's members",
                               ["mnist-gan-ensemble member 1 of 2", "mnist-gan-ensemble member 2 of 2"])]
    whole = load_model(CARD, cache=tmp_path / "whole", data_dir=mnist_fixture_dir, device="cpu")
    assert _same_weights(fanned.module, whole.module) and fanned.metrics["members"] == 2
    assert not any((tmp_path / "whole").glob("*.member-*"))  # outside a remote block: the card trains whole

