"""Inputs that cannot break it (issue 20): typed API arguments, classifier outputs, numeric extremes."""

from __future__ import annotations

import pytest
import torch

import ppl_audit as pa
from ppl_audit import sampling
from ppl_audit.audits.spec import MAX_SEED, validate_seed
from ppl_audit.errors import AuditFileError, InvalidInputError, ModelOutputError
from ppl_audit.levelset import (
    MAX_CONCENTRATION,
    MAX_SIGMA,
    MIN_CONCENTRATION,
    MIN_SIGMA,
    LevelSet,
    dirichlet_log_likelihood,
    validate_target,
)
from ppl_audit.validators import MAX_API_SEED, check_count, check_real, check_seed



def half(x):
    return torch.full((len(x), 2), 0.5)


@pytest.fixture
def no_sampling(monkeypatch):
    """Fail the test if sample_level_set gets past its checks: they must come before any work."""
    def refuse(*args, **kwargs):
        raise AssertionError("the sampler ran although an argument was invalid")

    monkeypatch.setattr(sampling, "_run_backend", refuse)


def call(**kwargs):
    base = dict(num_particles=8, num_steps=2, device="cpu", method="mh")
    return pa.sample_level_set(pa.HouseRocketWorld(), half, [0.5, 0.5], **(base | kwargs))


# --------------------------------------------------------------------------- seeds: one rule everywhere


@pytest.mark.parametrize("seed", [1.5, 1.9, True, False, -1, 2**63, 2**64, "3", None, 1e3])
def test_api_seed_must_be_a_non_negative_int_below_2_63(seed, no_sampling):
    with pytest.raises(InvalidInputError, match=r"seed must be an integer in 0\.\.9223372036854775807"):
        call(seed=seed)


def test_largest_api_seed_is_accepted():
    assert check_seed(MAX_API_SEED) == 2**63 - 1 and call(seed=MAX_API_SEED).latents.shape == (8, 3)


def test_audit_seeds_use_the_same_validator_with_their_own_bound():
    assert validate_seed(MAX_SEED) == MAX_SEED
    for bad in (MAX_SEED + 1, 1.5, True, -1):
        with pytest.raises(AuditFileError, match="seed must be an integer in 0..4294967295"):
            validate_seed(bad)


def test_a_seed_with_more_digits_than_python_prints_is_still_one_line():
    with pytest.raises(InvalidInputError, match="an integer of about"):
        check_seed(10**5000)


# --------------------------------------------------------------------------- options and other arguments


@pytest.mark.parametrize("method,options,needle", [
    ("mh", {"foo": 1}, "options ['foo'] are not settings of method 'mh'; it takes: none"),
    ("hmc", {"num_leapfrogs": 3}, "options ['num_leapfrogs'] are not settings of method 'hmc'"),
    ("hmc", {"seed": 3}, "options ['seed'] are not settings"),  # set by sample_level_set itself
    ("hmc", {"num_leapfrog": "3"}, "options num_leapfrog of method 'hmc' must be int, got '3'"),
    ("hmc", {"num_leapfrog": 3.0}, "must be int, got 3.0"),
    ("hmc", {"num_leapfrog": True}, "must be int, got True"),
    ("hmc", {"target_acceptance": "0.8"}, "target_acceptance of method 'hmc' must be float"),
    ("hmc", {"target_acceptance": float("nan")}, "must be float, got nan"),
    ("smc", {"space": 3}, "options space of method 'smc' must be str"),
    ("smc", {"max_moves": "7"}, "max_moves of method 'smc' must be int | None"),
    ("svi", {"guide": 1}, "guide of method 'svi' must be str"),
    ("mh", ["num_leapfrog"], "options must be a dict"),
    ("mh", {3: 1}, "options must be a dict"),
])
def test_unknown_and_ill_typed_options_name_the_key(method, options, needle):
    with pytest.raises(InvalidInputError) as info:
        sampling.check_sampler_options(method, options)
    assert needle in str(info.value)


def test_sample_level_set_checks_options_before_sampling(no_sampling):
    with pytest.raises(InvalidInputError, match="'foo'"):
        call(options={"foo": 1})


def test_well_typed_options_pass_through():
    assert sampling.check_sampler_options("smc", {"space": "latent", "max_moves": None, "num_moves": 3}) == {
        "space": "latent", "max_moves": None, "num_moves": 3}
    assert sampling.check_sampler_options("hmc", {"target_acceptance": 1}) == {"target_acceptance": 1}


@pytest.mark.parametrize("kwargs,needle", [
    ({"warmup_fraction": "0.5"}, r"warmup_fraction must be a number in \[0, 1\), got '0.5'"),
    ({"warmup_fraction": 1.0}, "warmup_fraction"),
    ({"warmup_fraction": True}, "warmup_fraction"),
    ({"num_particles": True}, "num_particles must be a positive integer"),
    ({"num_steps": 2.0}, "num_steps must be a positive integer"),
    ({"num_samples": True}, "num_samples must be in 1..8"),
    ({"init": 5}, "unknown init"),
    ({"method": ["mh"]}, "unknown method"),
])
def test_ill_typed_arguments_are_invalid_input_not_type_errors(kwargs, needle, no_sampling):
    with pytest.raises(InvalidInputError, match=needle):
        call(**kwargs)


def test_audit_file_sampler_options_go_through_the_same_check():
    from ppl_audit.audits.levelset import LevelSetAuditSpec

    with pytest.raises(InvalidInputError, match="sampler_options num_leapfrog of method 'hmc' must be int"):
        LevelSetAuditSpec(method="hmc", sampler_options={"num_leapfrog": 2.5})
    # smc's own option, which its backend's signature does not list, is a setting too.
    assert LevelSetAuditSpec(sampler_options={"space": "latent"}).sampler_options == {"space": "latent"}


# --------------------------------------------------------------------------- the shared validators


def test_check_count_and_check_real_name_the_range():
    with pytest.raises(InvalidInputError, match=r"steps must be an integer in 1..10 \(why\), got 11"):
        check_count(11, "steps", 10, why="why")
    assert check_count(10, "steps", 10) == 10
    with pytest.raises(InvalidInputError, match=r"x must be a number in \(0, 1\]"):
        check_real(0, "x", 0, 1, low_open=True)
    assert check_real(1, "x", 0, 1, low_open=True) == 1.0


# --------------------------------------------------------------------------- classifier outputs


def ragged(x):
    return [[0.5, 0.5]] + [[1.0]] * (len(x) - 1)


def generator_output(x):
    return (row for row in torch.full((len(x), 2), 0.5))


@pytest.mark.parametrize("fn,needle", [
    (lambda x: "0.5,0.5", "returned a str, not an (N, K) array"),
    (lambda x: {"a": 0.5, "b": 0.5}, "returned a dict"),
    (generator_output, "returned a generator"),
    (ragged, "not a rectangular array of numbers"),
    (lambda x: [["a", "b"]] * len(x), "dtype <U1"),
    (lambda x: None, "returned a NoneType"),
    (lambda x: 0.5, "returned a float"),
    (lambda x: torch.full((len(x), 2), 0.5, dtype=torch.complex64), "dtype torch.complex64"),
    (lambda x: torch.ones(len(x), 2, dtype=torch.bool), "dtype torch.bool"),
    (lambda x: torch.full((len(x), 3), 1 / 3), "shape"),
    (lambda x: torch.full((len(x),), 0.5), "shape"),
    (lambda x: torch.full((len(x), 2), float("nan")), "NaN or inf"),
    (lambda x: torch.full((len(x), 2), 0.7), "not probabilities"),
])
def test_every_misbehaving_output_is_a_model_output_error_naming_it(fn, needle):
    clf = pa.CallableClassifier(fn, ["rocket", "house"], name="black-box")
    with pytest.raises(ModelOutputError, match="black-box") as info:
        clf.probs(torch.zeros(3, 1, 8, 8))
    assert needle in str(info.value)


def test_integer_one_hot_lists_are_probabilities():
    clf = pa.CallableClassifier(lambda x: [[1, 0]] * len(x), ["rocket", "house"])
    assert clf.probs(torch.zeros(2, 1, 8, 8)).tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_a_raising_callable_is_wrapped_with_its_name_and_cause():
    def broken_model(x):
        raise KeyError("weights")

    clf = pa.CallableClassifier(broken_model, ["rocket", "house"])
    with pytest.raises(ModelOutputError, match="classifier 'test_a_raising_callable.*broken_model' "
                                                         "raised KeyError: 'weights'") as info:
        clf.probs(torch.zeros(2, 1, 8, 8))
    assert isinstance(info.value.__cause__, KeyError)


def test_keyboard_interrupt_in_a_classifier_passes_through():
    def interrupted(x):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pa.CallableClassifier(interrupted, ["rocket", "house"]).probs(torch.zeros(2, 1, 8, 8))


def test_the_sampler_reports_a_misbehaving_classifier_as_model_output_error():
    with pytest.raises(ModelOutputError, match="returned a dict"):
        pa.sample_level_set(pa.HouseRocketWorld(), lambda x: {"p": 1}, [0.5, 0.5], num_particles=8, num_steps=2,
                            device="cpu", method="mh")


@pytest.mark.parametrize("class_names", ["ab", 5, [1, 2], None])
def test_class_names_must_be_strings(class_names):
    with pytest.raises(InvalidInputError, match="class_names|class names"):
        pa.CallableClassifier(half, class_names)


# --------------------------------------------------------------------------- numeric extremes


@pytest.mark.parametrize("concentration", [1e300, 1e-300, 1e10, 1e5 * (1 + 1e-9), 1e-6 * (1 - 1e-9), "10", True,
                                           float("inf"), float("nan")])
def test_concentration_outside_the_float32_safe_range_is_refused_with_the_range(concentration, no_sampling):
    with pytest.raises(InvalidInputError, match=r"concentration \(alpha\) must be a number in \[1e-06, 100000\]"):
        call(concentration=concentration)


@pytest.mark.parametrize("concentration", [MIN_CONCENTRATION, MAX_CONCENTRATION])
def test_the_concentration_bounds_keep_the_float32_dirichlet_finite(concentration):
    # The worst predictions: saturated (floored at 1e-6) and uniform; the worst targets: near a vertex and centred.
    probs = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    for target in ([1e-30, 1 - 1e-7], [0.5, 0.5]):
        level_set = LevelSet(pa.HouseRocketWorld(), half, target, concentration)
        assert torch.isfinite(level_set.log_likelihood(probs)).all()
    # ... and accurate: within 0.1 nats of the float64 value at the upper bound.
    t = torch.tensor([0.001, 0.999])
    exact = dirichlet_log_likelihood(probs.double(), t.double(), concentration)
    assert (dirichlet_log_likelihood(probs, t, concentration).double() - exact).abs().max() < 0.1


@pytest.mark.parametrize("target", [[1e-50, 0.9999999999999], [0.99999999999, 1e-11]])
def test_targets_that_reach_the_boundary_in_float32_are_refused(target, no_sampling):
    with pytest.raises(InvalidInputError, match="simplex boundary in float32"):
        pa.sample_level_set(pa.HouseRocketWorld(), half, target, num_particles=8, num_steps=2, device="cpu")


def test_a_tiny_target_entry_that_float32_still_holds_is_accepted():
    assert validate_target([1e-30, 1.0 - 1e-30 - 1e-7]).tolist()[0] > 0


@pytest.mark.parametrize("sigma", [1e-300, 0.0, 1e-4, 1e3, float("inf"), "0.05", True])
def test_sigma_outside_its_range_is_refused(sigma, no_sampling):
    with pytest.raises(InvalidInputError, match=r"sigma must be a number in \[0.001, 100\]"):
        call(relaxation="gaussian", sigma=sigma)


def test_the_sigma_bounds_keep_the_gaussian_finite():
    probs = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    for sigma in (MIN_SIGMA, MAX_SIGMA):
        level_set = LevelSet(pa.HouseRocketWorld(), half, [1.0, 0.0], relaxation="gaussian", sigma=sigma)
        assert torch.isfinite(level_set.log_likelihood(probs)).all()


@pytest.mark.parametrize("kwargs,needle", [
    ({"num_particles": 10**12}, r"num_particles must be an integer in 1..1000000 \(the documented bound\)"),
    ({"num_steps": 10**12}, r"num_steps must be an integer in 1..1000000"),
    ({"num_particles": 100_000, "num_steps": 100_000}, "1e\\+10 classifier evaluations is above the bound"),
    ({"method": "hmc", "num_particles": 10_000, "num_steps": 100_000}, "x 8 leapfrog steps"),
    ({"method": "smc", "options": {"max_stages": 10**9}}, "option max_stages = 1000000000 is above"),
])
def test_counts_above_their_documented_bounds_are_refused(kwargs, needle, no_sampling):
    with pytest.raises(InvalidInputError, match=needle):
        call(**kwargs)


def test_a_run_that_does_not_fit_in_memory_is_refused_with_the_estimate(monkeypatch, no_sampling):
    import ppl_audit.validators as validators

    monkeypatch.setattr(validators, "available_memory_bytes", lambda: 10 * 2**20)
    needed = sampling.estimate_run_bytes("mh", 1000, 1000, 3, 2)
    assert needed == 4 * 1000 * 1000 * 21 + 4 * 1000 * 4 * 5  # 84 MB of trace copies, 80 kB of initial draws
    with pytest.raises(InvalidInputError, match=r"a mh run would need about 80.2 MiB of memory, but 10 MiB"):
        call(num_particles=1000, num_steps=1000)


def test_the_audit_spec_applies_the_same_bounds():
    from ppl_audit.audits.levelset import LevelSetAuditSpec, TargetSpec

    with pytest.raises(InvalidInputError, match="num_particles must be an integer in 1..1000000"):
        LevelSetAuditSpec(num_particles=10**12, num_samples=10)
    with pytest.raises(InvalidInputError, match="num_prior_samples must be an integer in 1..1000000"):
        LevelSetAuditSpec(num_prior_samples=2**63 - 1)
    with pytest.raises(InvalidInputError, match="steps"):
        LevelSetAuditSpec(num_steps=10**12)
    with pytest.raises(InvalidInputError, match="concentration"):
        TargetSpec("t", (0.5, 0.5), 1e300)
    with pytest.raises(InvalidInputError, match="sigma"):
        TargetSpec("t", (0.5, 0.5), relaxation="gaussian", sigma=1e-300)
    with pytest.raises(InvalidInputError, match="float32"):
        TargetSpec("t", (1e-50, 0.9999999999999))
