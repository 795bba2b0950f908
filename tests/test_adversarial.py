import pytest
import torch

from ppl_audit.adversarial import fgsm_from_noise
from ppl_audit.errors import InvalidInputError, ModelOutputError

CENTRE = 0.8


def log_p(x):
    return -(x - CENTRE).pow(2).flatten(1).sum(1)


def noise_start(n, seed):
    # The same starting noise fgsm_from_noise draws: N(0.5, 0.25^2) clipped to [0, 1].
    return (torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 0.25 + 0.5).clamp(0, 1)


def test_fgsm_increases_log_likelihood_and_stays_in_unit_interval():
    start = noise_start(8, 0)
    one = fgsm_from_noise(log_p, 8, epsilon=0.05, generator=torch.Generator().manual_seed(0))
    many = fgsm_from_noise(log_p, 8, epsilon=0.05, steps=5, generator=torch.Generator().manual_seed(0))
    assert one.shape == (8, 1, 28, 28) and one.dtype == torch.float32 and not one.requires_grad
    assert (log_p(one) > log_p(start)).all()
    assert (log_p(many) > log_p(one)).all()
    for x in (one, many):
        assert x.min() >= 0 and x.max() <= 1
    # one signed step moves every pixel by epsilon, except where the clip at 0 or 1 binds
    moved = (one - start).abs()
    assert torch.allclose(moved[(start > 0.05) & (start < 0.95)], torch.tensor(0.05), atol=1e-6)


def test_fgsm_same_seed_same_images():
    a = fgsm_from_noise(log_p, 3, epsilon=0.1, steps=2, generator=torch.Generator().manual_seed(7))
    b = fgsm_from_noise(log_p, 3, epsilon=0.1, steps=2, generator=torch.Generator().manual_seed(7))
    c = fgsm_from_noise(log_p, 3, epsilon=0.1, steps=2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fgsm_other_image_shape():
    x = fgsm_from_noise(log_p, 2, epsilon=0.1, generator=None, image_shape=(3, 8, 8))
    assert x.shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -0.1}, "epsilon"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"epsilon": 0.1, "steps": 0}, "steps"),
        ({"epsilon": 0.1, "steps": 1.5}, "steps"),
        ({"epsilon": 0.1, "num_images": 0}, "num_images"),
        ({"epsilon": 0.1, "image_shape": (28, 28)}, "image_shape"),
    ],
)
def test_fgsm_validates_arguments(kwargs, match):
    kwargs = {"num_images": 2, "generator": torch.Generator().manual_seed(0), **kwargs}
    num_images = kwargs.pop("num_images")
    with pytest.raises(InvalidInputError, match=match):
        fgsm_from_noise(log_p, num_images, **kwargs)


def test_fgsm_reports_bad_model_output():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ModelOutputError, match="expected a"):
        fgsm_from_noise(lambda x: log_p(x)[None], 2, epsilon=0.1, generator=gen)
    with pytest.raises(ModelOutputError, match="NaN or inf"):
        fgsm_from_noise(lambda x: log_p(x) * float("nan"), 2, epsilon=0.1, generator=gen)
    with pytest.raises(ModelOutputError, match="not differentiable"):
        fgsm_from_noise(lambda x: log_p(x).detach(), 2, epsilon=0.1, generator=gen)
