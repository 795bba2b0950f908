"""What the VAE and the GAN share: image shape, latent naming and the report's sample grids.

The grids are drawn by :func:`ppl_audit.report.figures.montage_figure`; this module only picks the images."""

from __future__ import annotations

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)  # (C, H, W) of every generative model here: MNIST's format
NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
SAMPLE_SEED = 0  # seeds the report's sample grid, so that a cached model's report is the same bytes every time
NUM_REPORT_SAMPLES = 64  # an 8 x 8 grid
NUM_REPORT_COLUMNS = 8
TRAVERSAL_STEPS = 9  # columns of the latent traversal
TRAVERSAL_RANGE = 2.0  # traverse each latent over [-2, 2] prior standard deviations (95% of its mass), in steps of 0.5


def latent_names(latent_dim: int) -> tuple[str, ...]:
    """``("z1", ..., "zD")``: the latent coordinate names of every decoder prior.

    Examples
    --------
    >>> latent_names(3)
    ('z1', 'z2', 'z3')
    """
    return tuple(f"z{i + 1}" for i in range(latent_dim))


@torch.no_grad()
def decode_on(decoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Decode ``z`` on the decoder's device and return CPU images (eval mode assumed).

    Examples
    --------
    >>> decode_on(nn.Sequential(nn.Linear(2, 784), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28))),
    ...           torch.zeros(3, 2)).shape
    torch.Size([3, 1, 28, 28])
    """
    first = next(decoder.parameters(), None)
    device = first.device if first is not None else z.device
    return decoder(z.to(device)).cpu()


def trained_decoder_sections(trained, data_dir=None) -> list:
    """:func:`decoder_report_sections` of a trained VAE or GAN (a ``Trainer.report_sections``; reads no data)."""
    return decoder_report_sections(trained.module.decoder, trained.module.latent_dim, trained.card.name)


def decoder_report_sections(decoder: nn.Module, latent_dim: int, model_name: str) -> list:
    """Two report sections: an 8 x 8 grid of prior samples and a per-latent traversal.

    Parameters
    ----------
    decoder : nn.Module
        ``z (N, D) -> images (N, 1, 28, 28)`` in ``[0, 1]``, in eval mode.
    latent_dim : int
        ``D``.
    model_name : str
        Used in titles.

    Returns
    -------
    list of ppl_audit.report.Section
        ``samples`` (figure ``samples``) and ``latent_traversal`` (figure ``latent_traversal``).

    Examples
    --------
    >>> dec = nn.Sequential(nn.Linear(2, 784), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28)))
    >>> [s.figures[0].name for s in decoder_report_sections(dec, 2, "toy")]
    ['samples', 'latent_traversal']
    """
    from ppl_audit.report import Section
    from ppl_audit.report.figures import montage_figure, rounded

    z = torch.randn(NUM_REPORT_SAMPLES, latent_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    samples = montage_figure(
        "samples", f"{model_name}: samples, z ~ N(0, I)",
        f"Decoded draws from the {latent_dim}-dimensional standard normal prior (seed {SAMPLE_SEED}); "
        "the images a decoder prior proposes before any classifier is involved.",
        decode_on(decoder, z), NUM_REPORT_COLUMNS,
        data={"seed": SAMPLE_SEED, "latents": rounded(z)},
    )
    values = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, TRAVERSAL_STEPS)
    grid = torch.zeros(latent_dim, TRAVERSAL_STEPS, latent_dim)
    for i in range(latent_dim):
        grid[i, :, i] = values
    traversal = montage_figure(
        "latent_traversal", f"{model_name}: latent traversal",
        f"Row z_i varies that latent from {-TRAVERSAL_RANGE} to {TRAVERSAL_RANGE} (columns) with the other "
        "latents at 0: what each latent coordinate controls.",
        decode_on(decoder, grid.reshape(-1, latent_dim)), TRAVERSAL_STEPS,
        row_labels=list(latent_names(latent_dim)), column_labels=[f"{v:+.1f}" for v in values.tolist()],
        data={"values": rounded(values), "latent_dim": latent_dim},
    )
    return [
        Section("samples", "Samples", figures=[samples]),
        Section("latent_traversal", "Latent traversal", figures=[traversal]),
    ]


__all__ = [
    "IMAGE_SHAPE",
    "NUM_PIXELS",
    "NUM_REPORT_COLUMNS",
    "NUM_REPORT_SAMPLES",
    "SAMPLE_SEED",
    "TRAVERSAL_RANGE",
    "TRAVERSAL_STEPS",
    "decode_on",
    "decoder_report_sections",
    "latent_names",
    "trained_decoder_sections",
]
