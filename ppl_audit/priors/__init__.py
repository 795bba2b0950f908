"""Generative priors: the Prior contract, the built-in house/rocket world, the MNIST decoder priors and the
labelled mixtures of per-class generators."""

from ppl_audit.priors.base import LATENT_SITE, Prior
from ppl_audit.priors.class_mixture import ClassMixturePrior, class_mixture_prior
from ppl_audit.priors.decoder import DECODER_KINDS, DecoderPrior, decoder_prior
from ppl_audit.priors.house_rocket import CLASS_NAMES, WORLDS, HouseRocketWorld, make_world
from ppl_audit.priors.truncated_normal import LowerTruncatedNormal

__all__ = [
    "CLASS_NAMES",
    "ClassMixturePrior",
    "DECODER_KINDS",
    "LATENT_SITE",
    "WORLDS",
    "DecoderPrior",
    "HouseRocketWorld",
    "LowerTruncatedNormal",
    "Prior",
    "class_mixture_prior",
    "decoder_prior",
    "make_world",
]
