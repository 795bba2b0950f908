import torch

from ppl_audit.priors.render import CENTRE_X, GROUND_Y, gaussian_blur, render_shapes


def _hard_render(w, h, t):
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    dx = (xs - CENTRE_X).abs()
    rect = (dx <= w / 2) & (ys >= GROUND_Y - h) & (ys <= GROUND_Y)
    apex = GROUND_Y - h - t
    tri = (dx <= (w / 2) * (ys - apex) / t) & (ys <= GROUND_Y - h) & (ys >= apex)
    return (rect | tri).float()


def test_soft_render_tends_to_the_hard_render():
    w, h, t = 20.3, 17.6, 9.2
    soft = render_shapes(torch.tensor([w]), torch.tensor([h]), torch.tensor([t]), softness=1e-3, blur_sigma=0)[0, 0]
    hard = _hard_render(w, h, t)
    # At softness 1e-3 a pixel centre more than 0.02 px from every edge is
    # within exp(-20) of 0 or 1; only the few centres nearer a slanted edge may differ.
    differing = int(((soft - hard).abs() > 1e-6).sum())
    assert differing <= 2
    assert int(hard.sum()) > 300  # the shape is really there


def test_render_is_differentiable_in_every_latent():
    z = torch.tensor([[15.0, 20.0, 8.0, 10.0, 30.0, 25.0]], requires_grad=True)
    img = render_shapes(z[:, 0], z[:, 1], z[:, 2], (z[:, 3], z[:, 4], z[:, 5]))
    img.sum().backward()
    assert torch.isfinite(z.grad).all()
    assert (z.grad.abs() > 0).all()


def test_render_range_shape_and_batch_consistency():
    w = torch.tensor([10.0, 30.0, 60.0])
    h = torch.tensor([30.0, 10.0, 70.0])  # the last one is taller than the canvas: clipped
    t = torch.tensor([8.0, 12.0, 5.0])
    batch = render_shapes(w, h, t)
    assert batch.shape == (3, 1, 64, 64)
    assert batch.min() >= 0 and batch.max() <= 1
    single = render_shapes(w[1:2], h[1:2], t[1:2])
    assert torch.allclose(batch[1:2], single, atol=1e-6)


def test_degenerate_latents_give_finite_images():
    img = render_shapes(torch.tensor([-3.0]), torch.tensor([0.0]), torch.tensor([-1.0]))
    assert torch.isfinite(img).all()


def test_blur_preserves_mass_away_from_the_border():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    y = gaussian_blur(x, 1.0)
    assert abs(float(y.sum()) - 1.0) < 1e-5
    assert y[0, 0, 8, 8] == y.max()


def _latents(n, circle, generator):
    """Latents over and past the world's ranges: degenerate roofs (t <= 0) and disks off the canvas too."""
    u = torch.rand(n, 6, generator=generator)
    w, h, t = 2 + 40 * u[:, 0], 2 + 50 * u[:, 1], -5 + 30 * u[:, 2]
    disk = (20 * u[:, 3], -10 + 84 * u[:, 4], -10 + 84 * u[:, 5]) if circle else None
    return w, h, t, disk


def test_in_place_render_gives_the_same_bits_as_the_differentiable_one():
    # The in-place path (sampling under no_grad) must be the autograd path's arithmetic, not an approximation.
    generator = torch.Generator().manual_seed(0)
    for circle in (False, True):
        w, h, t, disk = _latents(64, circle, generator)
        for blur in (1.0, 0.0):
            fresh = render_shapes(w, h, t, disk, blur_sigma=blur, in_place=False)
            assert torch.equal(render_shapes(w, h, t, disk, blur_sigma=blur, in_place=True), fresh)
            assert torch.equal(render_shapes(w, h, t, disk, blur_sigma=blur), fresh)  # the default, no grad


def test_render_records_gradients_only_through_the_out_of_place_path():
    generator = torch.Generator().manual_seed(1)
    w, h, t, disk = _latents(5, True, generator)
    latents = torch.stack([w, h, t, *disk], 1).requires_grad_(True)
    image = render_shapes(*latents[:, :3].unbind(1), tuple(latents[:, 3:].unbind(1)))  # in_place chosen: False
    (grad,) = torch.autograd.grad(image.sum(), latents)
    assert torch.isfinite(grad).all() and grad[:, :3].abs().sum() > 0
    with torch.no_grad():  # no recording, so in place, and the same image
        assert torch.equal(render_shapes(*latents[:, :3].unbind(1), tuple(latents[:, 3:].unbind(1))), image.detach())


def _subnormals(x: torch.Tensor) -> int:
    return int(((x != 0) & (x.abs() < torch.finfo(x.dtype).tiny)).sum())


def test_the_ink_floor_leaves_no_subnormal_and_moves_no_pixel_by_more_than_itself(monkeypatch):
    # Subnormal floats make a CPU's arithmetic several times slower (benchmarks/ink_floor.py). The floor
    # drops ink below 1e-30; the blur's weights sum to 1, so a pixel moves by at most that plus the
    # rounding of its own value (a few ulp: 6e-30 was seen on pixels near 1e-22).
    import ppl_audit.priors.render as render

    generator = torch.Generator().manual_seed(2)
    for circle in (False, True):
        latents = _latents(256, circle, generator)
        for in_place in (True, False):
            floored = render_shapes(*latents, in_place=in_place)
            with monkeypatch.context() as m:
                m.setattr(render, "INK_FLOOR", 0.0)
                unfloored = render_shapes(*latents, in_place=in_place)
            assert _subnormals(unfloored) > 0  # the case the floor is for is present
            assert _subnormals(floored) == 0
            ulp = torch.finfo(floored.dtype).eps * unfloored.abs()
            assert ((floored - unfloored).abs() <= render.INK_FLOOR + 4 * ulp).all()


def test_a_nan_latent_gives_nan_pixels_not_a_blank_image():
    # The ink floor must not hide a NaN (the samplers stop on a non-finite log density and name it).
    latents = (torch.tensor([10.0, float("nan")]), torch.tensor([30.0, 30.0]), torch.tensor([8.0, 8.0]))
    for in_place in (True, False):
        image = render_shapes(*latents, in_place=in_place)
        assert torch.isfinite(image[0]).all() and torch.isnan(image[1]).any()
