import math

import pytest
import torch

from ppl_audit.data import (
    GAUSSIAN_NOISE_MEAN,
    GAUSSIAN_NOISE_STD,
    TRANSFORMS,
    apply_transform,
    available_transforms,
    gaussian_noise,
    get_transform,
    hflip,
    uniform_noise,
    vflip,
)
from ppl_audit.errors import InvalidInputError

NAMES = ("uniform-noise", "gaussian-noise", "hflip", "vflip")


def images(n=8, h=28, w=28, seed=0):
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed))


def test_registry_names():
    assert available_transforms() == NAMES
    assert {name for name, t in TRANSFORMS.items() if t.random} == {"uniform-noise", "gaussian-noise"}
    assert all(TRANSFORMS[name].name == name and TRANSFORMS[name].description for name in NAMES)
    with pytest.raises(InvalidInputError, match="unknown image transform 'blur'; known transforms: uniform-noise"):
        get_transform("blur")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (3, 1, 64, 32), (0, 1, 28, 28), (2, 3, 8, 8)])
def test_shape_dtype_device_and_range(name, shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    out = apply_transform(name, x, generator=torch.Generator().manual_seed(2))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    if out.numel():
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert out.data_ptr() != x.data_ptr() or not out.numel()  # a new tensor, input untouched


@pytest.mark.parametrize("name", NAMES)
def test_keeps_float64(name):
    x = images().double()
    assert apply_transform(name, x, generator=torch.Generator().manual_seed(0)).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.rand(28, 28), r"shape \(N, C, H, W\)"),
        (torch.rand(2, 28, 28), r"shape \(N, C, H, W\)"),
        (torch.full((1, 1, 28, 28), 1.5), r"\[0, 1\]"),
        (torch.full((1, 1, 28, 28), -0.1), r"\[0, 1\]"),
        (torch.full((1, 1, 28, 28), float("nan")), "NaN"),
        (torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "floating point"),
    ],
)
def test_bad_input_is_rejected(name, bad, message):
    with pytest.raises(InvalidInputError, match=message):
        apply_transform(name, bad, generator=torch.Generator().manual_seed(0))


def test_not_a_tensor():
    with pytest.raises(InvalidInputError, match="torch.Tensor"):
        hflip([[0.0]])


# --- flips: known answers ----------------------------------------------------------


def test_flips_known_answer():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3) / 5
    assert (hflip(x) * 5).round().reshape(2, 3).tolist() == [[2, 1, 0], [5, 4, 3]]
    assert (vflip(x) * 5).round().reshape(2, 3).tolist() == [[3, 4, 5], [0, 1, 2]]


def test_flips_are_involutions_and_commute():
    x = images()
    assert torch.equal(hflip(hflip(x)), x)
    assert torch.equal(vflip(vflip(x)), x)
    assert torch.equal(hflip(vflip(x)), vflip(hflip(x)))
    assert torch.equal(hflip(vflip(x)), torch.rot90(x, 2, dims=(-2, -1)))  # both flips = a half turn


def test_flip_is_per_image():
    x = images(4)
    out = hflip(x)
    for i in range(4):
        assert torch.equal(out[i : i + 1], hflip(x[i : i + 1]))


def test_flips_ignore_the_generator():
    x = images()
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert torch.equal(apply_transform("vflip", x, generator=g), vflip(x))
    assert torch.equal(g.get_state(), state)


# --- noise: seeding and moments -------------------------------------------------------


@pytest.mark.parametrize("name", ["uniform-noise", "gaussian-noise"])
def test_noise_is_seeded(name):
    x = images()
    a = apply_transform(name, x, generator=torch.Generator().manual_seed(7))
    b = apply_transform(name, x, generator=torch.Generator().manual_seed(7))
    c = apply_transform(name, x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", ["uniform-noise", "gaussian-noise"])
def test_noise_ignores_the_input_pixels(name):
    a = apply_transform(name, torch.zeros(4, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    b = apply_transform(name, torch.ones(4, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_noise_uses_the_global_rng_without_a_generator():
    torch.manual_seed(5)
    a = uniform_noise(images())
    torch.manual_seed(5)
    assert torch.equal(a, uniform_noise(images()))


def test_uniform_noise_moments():
    out = uniform_noise(torch.zeros(200, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    # 156,800 pixels: the mean's standard error is sqrt(1/12 / n) ~ 7e-4
    assert float(out.mean()) == pytest.approx(0.5, abs=4e-3)
    assert float(out.var()) == pytest.approx(1 / 12, abs=2e-3)
    assert float(out.min()) >= 0.0 and float(out.max()) < 1.0


def test_gaussian_noise_moments_and_clipping():
    assert (GAUSSIAN_NOISE_MEAN, GAUSSIAN_NOISE_STD) == (0.5, 0.25)
    out = gaussian_noise(torch.zeros(200, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    clipped = float(((out == 0) | (out == 1)).float().mean())
    assert clipped == pytest.approx(math.erfc(2 / math.sqrt(2)), abs=3e-3)  # P(|Z| > 2) = 0.0455
    assert float(out.mean()) == pytest.approx(0.5, abs=4e-3)  # clipping is symmetric about 0.5
    inside = out[(out > 0) & (out < 1)]
    assert float(inside.std()) == pytest.approx(0.2199, abs=4e-3)  # sd of N(0.5, 0.25^2) truncated at +-2 sd


def test_gaussian_noise_parameters():
    out = gaussian_noise(torch.zeros(100, 1, 8, 8), generator=torch.Generator().manual_seed(0), mean=0.2, std=0.01)
    assert float(out.mean()) == pytest.approx(0.2, abs=1e-3)
    for kwargs, message in [({"std": 0.0}, "std must be a positive"), ({"std": float("inf")}, "std"),
                            ({"mean": float("nan")}, "mean must be a finite")]:
        with pytest.raises(InvalidInputError, match=message):
            gaussian_noise(torch.zeros(1, 1, 8, 8), **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_keeps_the_cuda_device_and_cpu_seed_gives_the_same_noise(name):
    x = images()
    on_cpu = apply_transform(name, x, generator=torch.Generator().manual_seed(4))
    on_gpu = apply_transform(name, x.cuda(), generator=torch.Generator().manual_seed(4))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)
