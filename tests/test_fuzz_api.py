"""Property-based: ``sample_level_set`` either starts sampling or raises a PplAuditError (issue 20).

The sampler itself is replaced by a stub that records that every check passed: the property is about
the arguments, and sampling would make each case cost seconds.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ppl_audit as pa
from ppl_audit import sampling
from ppl_audit.errors import PplAuditError
from tests.fuzz_support import fuzz_settings


class Validated(Exception):
    """Raised by the stub sampler: every argument passed validation."""


def half(x):
    return torch.full((len(x), 2), 0.5)


WORLD = pa.HouseRocketWorld()
ANY = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                st.text(max_size=5), st.lists(st.floats(0, 1), max_size=3), st.just({"a": 1}))
NUMBER = st.one_of(st.sampled_from([1e300, 1e-300, 1e10, 1e5, 1e-6, 0.0, -1.0, 10.0]), ANY)
COUNT = st.one_of(st.integers(-2, 2**64), st.sampled_from([1, 8, 10**6, 10**6 + 1, 10**12, True, 1.5, "8"]), ANY)
OPTION_NAMES = ["num_leapfrog", "target_acceptance", "step_size", "space", "max_moves", "num_moves", "move",
                "num_final_draws", "max_stages", "guide", "learning_rate", "num_proposals", "seed", "bogus"]
KWARGS = st.fixed_dictionaries({}, optional={
    "concentration": NUMBER, "sigma": NUMBER, "num_particles": COUNT, "num_steps": COUNT, "num_samples": COUNT,
    "seed": st.one_of(st.sampled_from([-1, 0, 1.5, 1.9, True, 2**63 - 1, 2**63, 2**64]), ANY),
    "method": st.sampled_from(["smc", "mh", "hmc", "nuts", "svi", "magic", None, 3]),
    "init": st.sampled_from(["prior", "importance", "nope", None]),
    "warmup_fraction": st.one_of(st.sampled_from(["0.5", 0.5, 1.0, -0.1, True]), ANY),
    "relaxation": st.sampled_from(["dirichlet", "gaussian", "laplace", 5]),
    "device": st.sampled_from(["cpu", "auto", "cuda", "mps", "meta", "xla", 5, None, "cuda:9"]),
    "target": st.one_of(st.sampled_from([[0.5, 0.5], [1e-50, 0.9999999999999], [0.0, 1.0], [0.3, 0.7, 0.0],
                                         "0.5,0.5", [[0.5, 0.5]], None, [float("nan"), 0.5]]),
                        st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3)),
    "options": st.one_of(st.none(), st.dictionaries(st.sampled_from(OPTION_NAMES), ANY, max_size=3), ANY),
    "class_names": st.sampled_from([None, ["a", "b"], "ab", [1, 2], ["a"]]),
})


@pytest.fixture
def stub_sampler(monkeypatch):
    def validated(*args, **kwargs):
        raise Validated

    monkeypatch.setattr(sampling, "_run_backend", validated)


@fuzz_settings(max_examples=700)
@given(kwargs=KWARGS)
def test_sample_level_set_arguments(kwargs, stub_sampler):
    target = kwargs.pop("target", [0.5, 0.5])
    base = {"num_particles": 8, "num_steps": 2, "device": "cpu", "method": "mh"}
    try:
        pa.sample_level_set(WORLD, half, target, **(base | kwargs))
    except (Validated, PplAuditError):
        pass


@fuzz_settings(max_examples=150)
@given(output=st.one_of(
    st.text(max_size=4), st.dictionaries(st.text(max_size=2), st.floats(), max_size=2), st.none(), st.floats(),
    st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2), st.text(max_size=1)),
                      max_size=3), max_size=4),
    st.sampled_from(["generator", "raises", "bool", "complex", "int64", "float64-ok", "wrong-shape"])))
def test_classifier_outputs(output):

    def fn(x):
        special = {"generator": (row for row in [[0.5, 0.5]] * len(x)), "bool": torch.ones(len(x), 2, dtype=torch.bool),
                   "complex": torch.full((len(x), 2), 0.5, dtype=torch.complex64),
                   "int64": torch.tensor([[1, 0]] * len(x)), "float64-ok": torch.full((len(x), 2), 0.5).double(),
                   "wrong-shape": torch.full((len(x), 3, 1), 0.5)}
        if output == "raises":
            raise ZeroDivisionError("inside the model")
        return special.get(output, output) if isinstance(output, str) else output

    clf = pa.CallableClassifier(fn, ["a", "b"], name="fuzzed")
    try:
        p = clf.probs(torch.zeros(2, 1, 4, 4))
    except PplAuditError as exc:
        assert "fuzzed" in str(exc) and "\n" not in str(exc)
    else:
        assert p.shape == (2, 2) and torch.isfinite(p).all()
