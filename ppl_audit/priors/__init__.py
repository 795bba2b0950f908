"""Generative priors: the Prior contract and the built-in house/rocket world."""

from ppl_audit.priors.base import LATENT_SITE, Prior
from ppl_audit.priors.house_rocket import CLASS_NAMES, WORLDS, HouseRocketWorld, make_world
from ppl_audit.priors.truncated_normal import LowerTruncatedNormal

__all__ = ["CLASS_NAMES", "LATENT_SITE", "WORLDS", "HouseRocketWorld", "LowerTruncatedNormal", "Prior", "make_world"]
