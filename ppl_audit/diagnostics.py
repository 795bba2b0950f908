"""Posterior diagnostics: the one module that talks to ArviZ.

On Python 3.11 pip serves arviz 0.2x; arviz 1.x (Python >= 3.12) dropped
``waic``/``from_pyro`` and returns xarray DataTree. Every ArviZ call lives
here, so this is the one module to change when the project moves.

R-hat here is ArviZ's rank-normalised split R-hat over chains = particles.
With thousands of short chains it reads high (about 1.1 measured on this
project's models at stationarity), so reports print it with that caveat.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

RHAT_THRESHOLD = 1.01  # Vehtari et al. (2021): trust split R-hat below 1.01
ESS_THRESHOLD = 400  # Vehtari et al. (2021): at least 100 per chain for 4 chains
LATENT_VAR = "z"  # the latent variable's name in InferenceData
LATENT_DIM = "latent"  # the dimension that names the latent coordinates


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the 1.x refactor notice, printed at import
        import arviz

    return arviz


def to_inference_data(result) -> Any:
    """Convert a :class:`~ppl_audit.inference.mcmc.SamplingResult` to ``arviz.InferenceData``.

    ``posterior.z`` has dims ``(chain, draw, latent)`` with the latent names
    as coordinates; ``sample_stats`` holds the backend's per-draw statistics; extras
    (for example the classifier's predictions) go to ``posterior_predictive``.

    Examples
    --------
    >>> import torch
    >>> from ppl_audit.inference import MCMCConfig, run_mh
    >>> res = run_mh(lambda z: -0.5 * (z ** 2).sum(-1), torch.zeros(4, 2), MCMCConfig(20))
    >>> to_inference_data(res).posterior["z"].dims
    ('chain', 'draw', 'latent')
    """
    az = _arviz()
    coords = {LATENT_DIM: list(result.latent_names)}
    dims = {LATENT_VAR: [LATENT_DIM]}
    predictive = None
    if result.extras_trace is not None:
        names = list(result.extras_names) or [f"e{i}" for i in range(result.extras_trace.shape[-1])]
        coords["output"] = names
        dims["prediction"] = ["output"]
        predictive = {"prediction": result.extras_trace.numpy()}
    with warnings.catch_warnings():
        # "More chains than draws": many short chains are this engine's normal shape.
        warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        return az.from_dict(
            posterior={LATENT_VAR: result.trace.numpy()},
            posterior_predictive=predictive,
            sample_stats={k: v.numpy() for k, v in result.sample_stats.items()} or None,
            coords=coords,
            dims=dims,
        )


def summarize(idata) -> dict[str, Any]:
    """R-hat, bulk and tail ESS, MCSE, mean and sd of every latent.

    Returns
    -------
    dict
        ``per_latent`` (``{name: {rhat, ess_bulk, ess_tail, mcse_mean, mean, sd}}``)
        and the worst cases ``rhat_max``, ``ess_bulk_min``, ``ess_tail_min``.

    Examples
    --------
    >>> import torch
    >>> from ppl_audit.inference import MCMCConfig, run_mh
    >>> res = run_mh(lambda z: -0.5 * (z ** 2).sum(-1), torch.zeros(8, 1), MCMCConfig(200),
    ...              generator=torch.Generator().manual_seed(0))
    >>> sorted(summarize(res.to_arviz()))
    ['ess_bulk_min', 'ess_tail_min', 'per_latent', 'rhat_max']
    """
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # single-chain R-hat is NaN; reported as such
        rhat = az.rhat(idata, var_names=[LATENT_VAR])[LATENT_VAR].values
        ess_bulk = az.ess(idata, var_names=[LATENT_VAR], method="bulk")[LATENT_VAR].values
        ess_tail = az.ess(idata, var_names=[LATENT_VAR], method="tail")[LATENT_VAR].values
        mcse = az.mcse(idata, var_names=[LATENT_VAR], method="mean")[LATENT_VAR].values
    draws = idata.posterior[LATENT_VAR].values
    flat = draws.reshape(-1, draws.shape[-1])
    names = [str(n) for n in idata.posterior[LATENT_VAR].coords[LATENT_DIM].values]
    per_latent = {
        name: {
            "rhat": float(rhat[i]),
            "ess_bulk": float(ess_bulk[i]),
            "ess_tail": float(ess_tail[i]),
            "mcse_mean": float(mcse[i]),
            "mean": float(flat[:, i].mean()),
            "sd": float(flat[:, i].std(ddof=1)) if flat.shape[0] > 1 else float("nan"),
        }
        for i, name in enumerate(names)
    }
    return {
        "per_latent": per_latent,
        "rhat_max": float(np.max(rhat)),
        "ess_bulk_min": float(np.min(ess_bulk)),
        "ess_tail_min": float(np.min(ess_tail)),
    }


def arviz_version() -> str:
    """The installed ArviZ version string."""
    return _arviz().__version__
