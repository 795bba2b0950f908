"""Generative priors: the Prior contract, the built-in house/rocket world and the MNIST decoder priors."""

from ppl_audit.priors.base import LATENT_SITE, Prior
from ppl_audit.priors.decoder import DECODER_KINDS, DecoderPrior, decoder_prior
from ppl_audit.priors.house_rocket import CLASS_NAMES, WORLDS, HouseRocketWorld, make_world
from ppl_audit.priors.truncated_normal import LowerTruncatedNormal

__all__ = [
    "CLASS_NAMES",
    "DECODER_KINDS",
    "LATENT_SITE",
    "WORLDS",
    "DecoderPrior",
    "HouseRocketWorld",
    "LowerTruncatedNormal",
    "Prior",
    "decoder_prior",
    "make_world",
]
