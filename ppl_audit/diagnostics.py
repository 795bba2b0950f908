"""Posterior diagnostics: the one module that talks to ArviZ.

On Python 3.11 pip serves arviz 0.2x; arviz 1.x (Python >= 3.12) dropped
``waic``/``from_pyro`` and returns xarray DataTree. Every ArviZ call lives
here, so this is the one module to change when the project moves.

Two R-hats, for two shapes of run:

* ArviZ's rank-normalised split R-hat over chains (Vehtari et al. 2021), the
  right check for a few long chains (Pyro NUTS). With thousands of short
  chains it reads high even at stationarity (about 1.1 measured here).
* Nested R-hat (Margossian et al. 2022, "Nested R-hat: assessing the
  convergence of Markov chain Monte Carlo when running many short chains"),
  when the chains form superchains (groups that share a start, or independent
  SMC runs): it compares superchain means with the variance inside them, and
  is what the many-chain samplers of this toolkit are judged by.

Effective sample sizes: ArviZ's bulk/tail ESS treat chains as independent,
which MCMC chains are and SMC particles are not: after resampling, a run's
particles share ancestors, and counting 1,000 of them as chains overstated the
ESS 50-60 fold. For SMC, every ESS reported (bulk and tail) comes from the
spread of the independent runs' means (:func:`superchain_ess`), which counts
every correlation between particles.

Why nested R-hat <= 1.01 for SMC: at stationarity, with ``K`` independent runs
each worth ``E`` effective particles, ``B / W`` is the variance of a run's mean
over the posterior variance, about ``1 / E``, so nested R-hat is about
``sqrt(1 + 1 / E)``: 1.01 asks for about 50 effective particles per run.
SMC runs are also checked on their own terms (:func:`smc_checks`).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from ppl_audit.errors import InvalidInputError, ModelOutputError

RHAT_THRESHOLD = 1.01  # Vehtari et al. (2021): trust split R-hat below 1.01
NESTED_RHAT_THRESHOLD = 1.01  # Margossian et al. (2022) use 1 + delta with delta ~ 0.01 for nested R-hat
ESS_THRESHOLD = 400  # Vehtari et al. (2021): at least 100 per chain for 4 chains
# SMC's own checks. Runs whose evidence estimates differ by more than a factor e have put different
# mass on the level set's regions (the estimator's sd is below 1 nat in a run that has found them all).
LOG_EVIDENCE_SD_THRESHOLD = 1.0
# A run this far below the median run's log evidence (e^-3: 5% of its mass) left out a region holding
# most of the mass; runs that find every region agree within about 1 nat (the check above).
LAGGING_RUN_NATS = 3.0
# At least half of a run's final particles distinct: fewer means most are copies of a few ancestors.
MIN_DISTINCT_SHARE = 0.5
# Below 5% acceptance the final moves renew a particle about once in 20: the draws barely move.
MIN_FINAL_ACCEPTANCE = 0.05
TAIL_QUANTILES = (0.05, 0.95)  # the tails ArviZ's tail ESS looks at (Vehtari et al. 2021)
LATENT_VAR = "z"  # the latent variable's name in InferenceData
LATENT_DIM = "latent"  # the dimension that names the latent coordinates


logger = logging.getLogger(__name__)

# ArviZ log lines that say what the summaries already report (an R-hat or ESS of NaN and a "not
# converged" verdict for runs with under 2 chains or 4 draws, or NaN draws): dropped, never printed.
HARMLESS_ARVIZ_LOG = ("Shape validation failed", "Array contains NaN-value")


class _ArvizLogRoute(logging.Filter):
    """Sends ArviZ's own log lines (its private logger prints to stderr) through this module's logger,
    so that the caller's logging settings (the command line's ``--quiet``) govern them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(HARMLESS_ARVIZ_LOG):
            logger.log(record.levelno, "ArviZ: %s", message)
        return False


_ARVIZ_LOG_ROUTE = _ArvizLogRoute()


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the 1.x refactor notice, printed at import
        import arviz

    arviz_log = getattr(arviz, "_log", None)
    if arviz_log is not None and _ARVIZ_LOG_ROUTE not in arviz_log.filters:
        arviz_log.addFilter(_ARVIZ_LOG_ROUTE)
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


def nested_rhat(draws: np.ndarray, superchains: int) -> np.ndarray:
    """Nested R-hat of every latent (Margossian et al. 2022, Eq. 3-4).

    Parameters
    ----------
    draws : ndarray, (chains, draws, D)
        Chains ordered so that ``superchains`` contiguous equal groups form
        the superchains.
    superchains : int
        ``K >= 2``.

    Returns
    -------
    ndarray, (D,)
        ``sqrt(1 + B / W)``: ``B`` the variance of the superchain means,
        ``W`` the mean over superchains of (variance of their chain means +
        mean within-chain variance).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> bool(nested_rhat(rng.normal(size=(400, 10, 2)), 8).max() < 1.01)
    True
    >>> shifted = rng.normal(size=(400, 10, 1)); shifted[:50] += 3
    >>> bool(nested_rhat(shifted, 8)[0] > 1.1)
    True
    """
    x = np.asarray(draws, dtype=np.float64)
    chains, n, d = x.shape
    if superchains < 2 or chains % superchains:
        raise ValueError(f"{chains} chains cannot form {superchains} equal superchains (need K >= 2 dividing them)")
    m = chains // superchains
    x = x.reshape(superchains, m, n, d)
    chain_means = x.mean(axis=2)  # (K, M, D)
    super_means = chain_means.mean(axis=1)  # (K, D)
    between = super_means.var(axis=0, ddof=1)
    within_chain = x.var(axis=2, ddof=1).mean(axis=1) if n > 1 else np.zeros((superchains, d))
    between_chains = chain_means.var(axis=1, ddof=1) if m > 1 else np.zeros((superchains, d))
    within = (within_chain + between_chains).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(1.0 + between / within)


def superchain_ess(draws: np.ndarray, superchains: int) -> np.ndarray:
    """ESS of every latent's mean from the spread of the superchain means.

    ``ESS = sigma^2 / MCSE^2`` with ``sigma^2`` the pooled posterior variance
    and ``MCSE^2 = var(superchain means) / K``: whatever correlates the
    particles (shared ancestors, short chains) shows in the spread of
    independent superchains. Noisy for small ``K`` (a chi-square with
    ``K - 1`` degrees of freedom), but not optimistic.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ess = superchain_ess(rng.normal(size=(1600, 1, 1)), 16)
    >>> bool(600 < ess[0] < 4000)
    True
    """
    x = np.asarray(draws, dtype=np.float64)
    chains, n, d = x.shape
    if superchains < 2 or chains % superchains:
        raise ValueError(f"{chains} chains cannot form {superchains} equal superchains (need K >= 2 dividing them)")
    super_means = x.reshape(superchains, -1, d).mean(axis=1)
    variance = x.reshape(-1, d).var(axis=0, ddof=1)
    mcse2 = super_means.var(axis=0, ddof=1) / superchains
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.minimum(variance / mcse2, float(chains * n))


def superchain_tail_ess(draws: np.ndarray, superchains: int) -> np.ndarray:
    """Tail ESS of every latent from the superchains: the smaller ESS of the indicators of its
    5% and 95% quantiles (the quantities ArviZ's tail ESS measures), each by :func:`superchain_ess`.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> bool(superchain_tail_ess(rng.normal(size=(1600, 1, 1)), 16)[0] > 200)
    True
    """
    x = np.asarray(draws, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1])
    values = []
    for q in TAIL_QUANTILES:
        indicator = (x <= np.quantile(flat, q, axis=0)).astype(np.float64)
        values.append(superchain_ess(indicator, superchains))
    return np.minimum(*values)


def smc_checks(log_evidence, final_acceptance: float, distinct_share_min: float) -> dict[str, Any]:
    """SMC's own convergence checks: evidence agreement across runs, distinct particles, acceptance.

    Parameters
    ----------
    log_evidence : sequence of float
        Each run's log-evidence estimate.
    final_acceptance : float
        Mean acceptance of the moves at the posterior.
    distinct_share_min : float
        The smallest share, over runs, of distinct final particles.

    Examples
    --------
    >>> smc_checks([-3.1, -3.0, -2.9], 0.2, 0.8)["passed"]
    True
    """
    log_z = np.asarray(log_evidence, dtype=np.float64)
    sd = float(np.std(log_z, ddof=1)) if len(log_z) > 1 else float("nan")
    median = np.median(log_z) if len(log_z) > 2 else np.nan  # two runs have no "rest" to lag behind
    gaps = np.sort(median - log_z[log_z < median - LAGGING_RUN_NATS])
    failed = []
    if len(log_z) > 1 and not sd <= LOG_EVIDENCE_SD_THRESHOLD:
        failed.append(f"the runs' log evidence spreads by sd {beyond(sd, LOG_EVIDENCE_SD_THRESHOLD, 2)} "
                      f"(> {LOG_EVIDENCE_SD_THRESHOLD} nat): they put different mass on the level set's regions"
                      + _lagging_words(gaps, len(log_z)))
    if not distinct_share_min >= MIN_DISTINCT_SHARE:
        share = beyond(100 * distinct_share_min, 100 * MIN_DISTINCT_SHARE, 0)
        failed.append(f"a run keeps only {share}% distinct particles (< {MIN_DISTINCT_SHARE:.0%}): "
                      "most are copies of a few ancestors")
    if not final_acceptance >= MIN_FINAL_ACCEPTANCE:
        rate = beyond(100 * final_acceptance, 100 * MIN_FINAL_ACCEPTANCE, 1)
        failed.append(f"the moves at the posterior accept {rate}% (< {MIN_FINAL_ACCEPTANCE:.0%}): "
                      "the final draws barely move")
    return {"log_evidence_sd": sd, "final_acceptance": float(final_acceptance),
            "distinct_share_min": float(distinct_share_min), "lagging_runs": len(gaps), "failed": failed,
            "passed": not failed}


def _lagging_words(gaps: np.ndarray, runs: int) -> str:
    """``"; 5 of 16 runs lie 5.1-6.3 nats below the median run ..."``, or ``""`` where none lags."""
    if not len(gaps):
        return ""
    span = f"{gaps[0]:.1f}" if len(gaps) == 1 else f"{gaps[0]:.1f}-{gaps[-1]:.1f}"
    return (f"; {len(gaps)} of {runs} runs lie {span} nats below the median run (more than {LAGGING_RUN_NATS:g}), "
            "so each likely lost a region that holds most of the mass (larger runs lose it less often)")


def summarize(idata, superchains: int | None = None, *, chains_independent: bool = True,
              smc: dict[str, Any] | None = None) -> dict[str, Any]:
    """R-hat, bulk and tail ESS, MCSE, mean and sd of every latent.

    Parameters
    ----------
    idata : arviz.InferenceData
    superchains : int, optional
        Independent groups of chains (contiguous), for nested R-hat.
    chains_independent : bool, default True
        False for SMC particles: then every ESS comes from the superchains, never from ArviZ's
        chain-by-chain estimate (NaN without superchains).
    smc : dict, optional
        :func:`smc_checks`' result, judged with the rest.

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
    ['converged', 'ess_bulk_min', 'ess_tail_min', 'per_latent', 'rhat_max', 'verdict']
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
    nested = superchain_ess_values = None
    if superchains:
        nested = nested_rhat(draws, superchains)
        superchain_ess_values = superchain_ess(draws, superchains)
    if not chains_independent:  # correlated particles are no chains: only independent runs measure the ESS
        ess_bulk = superchain_ess_values if superchains else np.full(draws.shape[-1], np.nan)
        ess_tail = superchain_tail_ess(draws, superchains) if superchains else np.full(draws.shape[-1], np.nan)
        mcse = flat.std(axis=0, ddof=1) / np.sqrt(ess_bulk)
    names = [str(n) for n in idata.posterior[LATENT_VAR].coords[LATENT_DIM].values]
    per_latent = {
        name: {
            "rhat": float(rhat[i]),
            "ess_bulk": float(ess_bulk[i]),
            "ess_tail": float(ess_tail[i]),
            "mcse_mean": float(mcse[i]),
            "mean": float(flat[:, i].mean()),
            "sd": float(flat[:, i].std(ddof=1)) if flat.shape[0] > 1 else float("nan"),
            **(
                {"nested_rhat": float(nested[i]), "ess_superchains": float(superchain_ess_values[i])}
                if superchains
                else {}
            ),
        }
        for i, name in enumerate(names)
    }
    out = {
        "per_latent": per_latent,
        "rhat_max": float(np.max(rhat)),
        "ess_bulk_min": float(np.min(ess_bulk)),
        "ess_tail_min": float(np.min(ess_tail)),
    }
    if superchains:
        out["superchains"] = int(superchains)
        out["nested_rhat_max"] = float(np.max(nested))
        out["ess_superchains_min"] = float(np.min(superchain_ess_values))
        out["ess_per_superchain_min"] = out["ess_superchains_min"] / superchains
    if smc is not None:
        out["smc"] = smc
    out["converged"], out["verdict"] = convergence_verdict(out)
    return out


SMC_ADVISED_ROUNDS = 3  # the rounds a failed SMC verdict suggests: one more than the level sets' default


def convergence_verdict(summary: dict[str, Any]) -> tuple[bool, str]:
    """Whether the run passes its convergence check, and why, in plain words.

    Runs with superchains are judged by nested R-hat (<= 1.01, about 50 effective particles per
    superchain); SMC runs also by :func:`smc_checks`; others by split R-hat (<= 1.01) and bulk ESS
    (>= 400). A failure names every check that failed and what would help.

    Examples
    --------
    >>> convergence_verdict({"rhat_max": 1.002, "ess_bulk_min": 900.0})[0]
    True
    """
    if "nested_rhat_max" not in summary:
        rhat, ess = summary["rhat_max"], summary["ess_bulk_min"]
        if rhat <= RHAT_THRESHOLD and ess >= ESS_THRESHOLD:
            return True, f"Converged: split R-hat {rhat:.4f} <= {RHAT_THRESHOLD} and bulk ESS {ess:.0f} >= {ESS_THRESHOLD}."
        return False, (
            f"Not converged: split R-hat {rhat:.4f} (threshold {RHAT_THRESHOLD}) and bulk ESS {ess:.0f} "
            f"(threshold {ESS_THRESHOLD}): the chains disagree or are too short for trustworthy summaries; "
            "run more steps (--steps N; in an audit file, num_steps)."
        )
    value, k = summary["nested_rhat_max"], summary["superchains"]
    per_run = summary.get("ess_per_superchain_min")
    failed = []
    if not value <= NESTED_RHAT_THRESHOLD:
        worth = f"; these were worth about {per_run:.1f} each" if per_run is not None else ""
        failed.append(f"nested R-hat reaches {beyond(value, NESTED_RHAT_THRESHOLD)} (> {NESTED_RHAT_THRESHOLD}, "
                      f"which asks for about 50 effective particles in each of the {k} independent runs{worth})")
    smc = summary.get("smc")
    if smc is not None:
        failed += smc["failed"]
    if not failed:
        ess = summary.get("ess_superchains_min")
        return True, (
            f"Converged: nested R-hat {value:.4f} <= {NESTED_RHAT_THRESHOLD} on every latent, so the {k} independent "
            f"groups of chains agree about the posterior" + (f" (ESS {ess:.0f}, from their spread)" if ess else "")
            + ("; the SMC runs agree on the evidence and their moves renew the particles." if smc else ".")
        )
    advice = ("raise the particles (--particles N; in an audit file, num_particles) or the SMC rounds "
              f"(--sampler-option max_rounds={SMC_ADVISED_ROUNDS}; in an audit file, sampler_options.max_rounds): "
              "larger runs, and superchains of more runs, are worth more effective particles each"
              if smc is not None else "run more steps or particles (--steps N, --particles N; in an audit file, "
                                      "num_steps, num_particles)")
    return False, "Not converged: " + "; ".join(failed) + f". The means and spreads cannot be trusted yet; {advice}."


def beyond(value: float, threshold: float, digits: int = 4) -> str:
    """``value`` with enough decimals to show which side of ``threshold`` it is on.

    Examples
    --------
    >>> beyond(1.01004, 1.01), beyond(1.0153, 1.01)
    ('1.01004', '1.0153')
    """
    text = f"{value:.{digits}f}"
    while float(text) == threshold and digits < 12:
        digits += 1
        text = f"{value:.{digits}f}"
    return text


def save_netcdf(result, path) -> None:
    """Write a :class:`~ppl_audit.inference.result.SamplingResult` as netCDF that ArviZ loads back.

    Examples
    --------
    >>> import tempfile, os, torch
    >>> from ppl_audit.inference import MCMCConfig, run_mh
    >>> res = run_mh(lambda z: -0.5 * (z ** 2).sum(-1), torch.zeros(4, 2), MCMCConfig(20))
    >>> path = os.path.join(tempfile.mkdtemp(), "trace.nc")
    >>> save_netcdf(res, path)
    >>> load_netcdf(path).posterior["z"].shape
    (4, 10, 2)
    """
    to_inference_data(result).to_netcdf(str(path))


def load_netcdf(path):
    """Load an ``InferenceData`` written by :func:`save_netcdf`."""
    return _arviz().from_netcdf(str(path))


TRACE_ROW_INCHES = 1.6  # height of a trace plot's row (one latent): ArviZ's default 2 made 6 latents 12 in tall
RANK_ROW_INCHES = 2.1  # height of a rank plot's row: room for the chains' bands and their labels


def _fix_margins(fig, rows: int, *, left: float, right: float, top: float, bottom: float, row_gap: float,
                 column_gap: float = 0.0) -> None:
    """Place a figure's grid of ``rows`` rows with margins and gaps given in inches."""
    width, height = fig.get_size_inches()
    axes_height = (height - top - bottom - (rows - 1) * row_gap) / rows
    columns = max(1, round(len(fig.axes) / rows))
    axes_width = (width - left - right - (columns - 1) * column_gap) / columns
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        hspace=row_gap / axes_height, wspace=column_gap / axes_width)


def trace_and_rank_png(idata, *, max_chains: int = 8, chains=None, chain_labels=None) -> tuple[bytes, bytes]:
    """ArviZ trace plot and rank plot of the latents, one labelled row per latent, as PNG bytes.

    Each latent coordinate is its own row, titled with its name (``w``, ``h``, ...), as ArviZ lays
    out scalar variables: in the trace plot the density of the chains shown (left) beside every
    chain's draws (right), with a legend naming the chains; in the rank plot each chain's rank
    histogram in its own band. Figures grow with the number of latents, and the rows keep room
    between them for the tick labels and the next title, so no text runs into the row above.

    Parameters
    ----------
    idata : arviz.InferenceData
        With ``posterior.z`` shaped ``(chain, draw, latent)`` (:func:`to_inference_data`).
    max_chains : int, default 8
        Chains drawn when ``chains`` is not given: the first ones. Thousands of lines are
        unreadable, and rank plots need few chains to show disagreement.
    chains : sequence of int, optional
        The chains to draw, by index (for example one from each independent run).
    chain_labels : sequence of str, optional
        One label per chain drawn, for the trace plot's legend and the rank plot's bands
        (default: the chain indices).

    Returns
    -------
    trace_png, rank_png : bytes

    Examples
    --------
    >>> import torch
    >>> from ppl_audit.inference import MCMCConfig, run_mh
    >>> res = run_mh(lambda z: -0.5 * (z ** 2).sum(-1), torch.zeros(4, 2), MCMCConfig(20))
    >>> trace_png, rank_png = trace_and_rank_png(res.to_arviz(), chains=[0, 2], chain_labels=["a", "b"])
    >>> trace_png[:4] == rank_png[:4] == b"\\x89PNG"
    True
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ppl_audit.report.figures import png_bytes

    az = _arviz()
    posterior = idata.posterior
    picked = list(range(min(max_chains, posterior.sizes["chain"]))) if chains is None else [int(c) for c in chains]
    labels = [str(c) for c in picked] if chain_labels is None else [str(label) for label in chain_labels]
    if not picked or len(labels) != len(picked):
        raise InvalidInputError(f"trace_and_rank_png needs at least one chain and one label per chain, got chains "
                                f"{picked} and labels {labels}")
    subset = posterior[[LATENT_VAR]].isel(chain=picked)
    rows = subset.sizes[LATENT_DIM]
    labeller = az.labels.NoVarLabeller()  # a row's title is the latent's name alone, not "z\nw"
    # Margins fixed in inches, not constrained layout (which took a third of the drawing time): room
    # between rows for the x tick labels and the next row's title.
    no_layout = {"constrained_layout": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # combined: one density over the chains shown; a chain that never moved has none of its own
        axes = az.plot_trace(subset, var_names=[LATENT_VAR], compact=False, combined=True, labeller=labeller,
                             figsize=(12.0, TRACE_ROW_INCHES * rows + 1.3), backend_kwargs=no_layout)
        axes = np.atleast_2d(axes)
        fig = axes[0, 0].figure
        for ax in axes.flat:
            ax.title.set_fontsize(11)
            ax.tick_params(labelsize=9)
        axes[-1, 0].set_xlabel("value (density of the chains shown)", fontsize=9)
        axes[-1, 1].set_xlabel("kept draw", fontsize=9)
        _fix_margins(fig, rows, left=0.3, right=0.2, top=0.35, bottom=1.05, row_gap=0.6, column_gap=0.6)
        lines = axes[0, 1].get_lines()[: len(picked)]  # ArviZ draws one line per chain, in order
        fig.legend([Line2D([], [], color=line.get_color()) for line in lines], labels, title="chain",
                   loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 8), fontsize=8,
                   title_fontsize=8)
        trace_png = png_bytes(fig)
        plt.close(fig)
        axes = az.plot_rank(subset, var_names=[LATENT_VAR], labeller=labeller, grid=(rows, 1),
                            figsize=(9.0, RANK_ROW_INCHES * rows + 0.5), backend_kwargs=no_layout)
        axes = np.ravel(axes)
        for ax in axes:  # ArviZ numbers the bands 0..n-1: name them as the trace plot's legend does
            ax.set_yticks(ax.get_yticks()[: len(labels)], labels, fontsize=7)
            ax.set_ylabel("chain", fontsize=9)
            ax.set_xlabel(ax.get_xlabel(), fontsize=9)
            ax.title.set_fontsize(11)
            ax.tick_params(axis="x", labelsize=9)
        fig = axes[0].figure
        longest = max(len(label) for label in labels)
        _fix_margins(fig, rows, left=0.45 + 0.06 * longest, right=0.2, top=0.35, bottom=0.5, row_gap=0.85)
        rank_png = png_bytes(fig)
        plt.close(fig)
    return trace_png, rank_png


def arviz_version() -> str:
    """The installed ArviZ version string."""
    return _arviz().__version__


# --- WAIC and PSIS-LOO of an ensemble treated as posterior draws ---------------------------------

PARETO_K_THRESHOLD = 0.7  # Vehtari et al. (2017, 2024): PSIS-LOO estimates are unreliable where k > 0.7
ENSEMBLE_LOG_LIK_VAR = "log_lik"  # the variable's name in the log_likelihood group
ENSEMBLE_INPUT_DIM = "input"  # one observation per scored input
ENSEMBLE_MIN_MEMBERS = 2  # a variance over members needs at least two of them


def ensemble_waic_loo(log_lik, *, pointwise: bool = False) -> dict[str, Any]:
    """WAIC and PSIS-LOO of a ``(K, N)`` log-likelihood matrix, members taken as posterior draws.

    Choi & Jang ("Generative Ensembles for Robust Anomaly Detection") treat
    ``K`` independently trained models as draws from a posterior; here they
    become one chain of ``K`` draws and each of the ``N`` inputs one
    observation, and ArviZ computes

    * ``elpd_waic = sum_n [log mean_k exp(l_kn) - var_k(l_kn)]`` on the log
      scale (higher is better), where ArviZ's ``var`` is the population
      variance (``ddof=0``, measured on arviz 0.23.4); ``p_waic = sum_n var_k(l_kn)``;
    * ``elpd_loo`` by Pareto-smoothed importance sampling with relative
      efficiency 1 (the members are independent, not a Markov chain).

    With a handful of members PSIS has too few draws to fit a tail: ArviZ
    then reports ``k = inf`` for every input (seen for ``K <= 10``), and the
    LOO numbers should not be trusted; WAIC's own flag fires when a
    variance exceeds 0.4.

    Parameters
    ----------
    log_lik : torch.Tensor or array-like, (K, N)
        ``log p_k(x_n)`` of member ``k`` at input ``n``, ``K >= 2``.
    pointwise : bool
        Also return the per-input lists ``elpd_waic_i``, ``elpd_loo_i`` and ``pareto_k``.

    Returns
    -------
    dict
        Python numbers only: ``elpd_waic``, ``se_waic``, ``p_waic``,
        ``waic_warning``, ``elpd_loo``, ``se_loo``, ``p_loo``,
        ``loo_warning``, ``pareto_k_max``, ``pareto_k_over_0_7`` (inputs with
        ``k > 0.7``, NaN counted as over), ``pareto_k_threshold`` (ArviZ's
        sample-size-dependent bound), ``num_members``, ``num_inputs``,
        ``scale`` (``"log"``) and ``arviz_warnings`` (the messages ArviZ
        warned with, recorded instead of printed). Non-finite values (an
        infinite ``pareto_k_max``) stay floats; the report writer spells them.

    Raises
    ------
    InvalidInputError
        Not two-dimensional, fewer than two members or no inputs.
    ModelOutputError
        A log-likelihood is NaN or inf.

    Examples
    --------
    >>> out = ensemble_waic_loo(np.array([[-1.0, -2.0], [-1.5, -0.5], [-0.8, -3.0]]))
    >>> round(out["elpd_waic"], 4), round(out["p_waic"], 4), out["num_members"], out["num_inputs"]
    (-3.5335, 1.1422, 3, 2)
    """
    if hasattr(log_lik, "detach"):
        log_lik = log_lik.detach().cpu().double().numpy()
    values = np.asarray(log_lik, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < ENSEMBLE_MIN_MEMBERS or values.shape[1] < 1:
        raise InvalidInputError(
            f"log_lik must have shape (K, N) with K >= {ENSEMBLE_MIN_MEMBERS} members and N >= 1 inputs, "
            f"got {values.shape}"
        )
    bad = ~np.isfinite(values)
    if bad.any():
        raise ModelOutputError(
            f"log_lik has {int(bad.sum())} NaN or inf value(s) of {values.size} "
            f"(in {int(bad.any(axis=0).sum())} of {values.shape[1]} inputs)"
        )
    num_members, num_inputs = values.shape
    az = _arviz()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idata = az.from_dict(
            log_likelihood={ENSEMBLE_LOG_LIK_VAR: values[None]},  # (chain=1, draw=K, input=N)
            dims={ENSEMBLE_LOG_LIK_VAR: [ENSEMBLE_INPUT_DIM]},
        )
        waic = az.waic(idata, pointwise=True, scale="log")
        loo = az.loo(idata, pointwise=True, scale="log", reff=1.0)
    messages = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    pareto_k = np.asarray(loo["pareto_k"].values, dtype=np.float64)
    out: dict[str, Any] = {
        "elpd_waic": float(waic["elpd_waic"]),
        "se_waic": float(waic["se"]),
        "p_waic": float(waic["p_waic"]),
        "waic_warning": bool(waic["warning"]),
        "elpd_loo": float(loo["elpd_loo"]),
        "se_loo": float(loo["se"]),
        "p_loo": float(loo["p_loo"]),
        "loo_warning": bool(loo["warning"]),
        "pareto_k_max": float(np.max(pareto_k)),
        "pareto_k_over_0_7": int(np.sum(~(pareto_k <= PARETO_K_THRESHOLD))),
        "pareto_k_threshold": float(loo["good_k"]) if "good_k" in loo else PARETO_K_THRESHOLD,
        "num_members": int(num_members),
        "num_inputs": int(num_inputs),
        "scale": "log",
        "arviz_warnings": messages,
    }
    if pointwise:
        out["elpd_waic_i"] = [float(v) for v in np.ravel(waic["waic_i"].values)]
        out["elpd_loo_i"] = [float(v) for v in np.ravel(loo["loo_i"].values)]
        out["pareto_k"] = [float(v) for v in pareto_k]
    return out


__all__ = [
    "ENSEMBLE_INPUT_DIM",
    "ENSEMBLE_LOG_LIK_VAR",
    "ENSEMBLE_MIN_MEMBERS",
    "ESS_THRESHOLD",
    "HARMLESS_ARVIZ_LOG",
    "LAGGING_RUN_NATS",
    "LATENT_DIM",
    "LATENT_VAR",
    "LOG_EVIDENCE_SD_THRESHOLD",
    "MIN_DISTINCT_SHARE",
    "MIN_FINAL_ACCEPTANCE",
    "NESTED_RHAT_THRESHOLD",
    "PARETO_K_THRESHOLD",
    "RHAT_THRESHOLD",
    "RANK_ROW_INCHES",
    "TAIL_QUANTILES",
    "TRACE_ROW_INCHES",
    "arviz_version",
    "convergence_verdict",
    "ensemble_waic_loo",
    "load_netcdf",
    "nested_rhat",
    "save_netcdf",
    "smc_checks",
    "summarize",
    "superchain_ess",
    "superchain_tail_ess",
    "to_inference_data",
    "trace_and_rank_png",
]
