"""The OoD audit's trained ensembles and scorer, loaded as ``analyses/mnist-ood.toml`` names them.

Shared by the experiments that re-score images outside the audit
(``ood_omniglot_resizing.py``, ``ood_flip_classes.py``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ppl_audit.audits import load_audit_file
from ppl_audit.audits.ood import EnsembleScorer
from ppl_audit.metrics import ood_metrics
from ppl_audit.training import load_model

AUDIT_FILE = Path(__file__).resolve().parents[1] / "analyses" / "mnist-ood.toml"


def load_ood_models(data_dir: str, cache_dir: str | None = None):
    """``(spec, seed, trained, scorer)`` of the OoD audit file, on the CPU.

    ``trained`` maps ``vae``, ``beta_vae`` and ``gan`` to the loaded
    ensembles (each with its card); ``scorer`` is the audit's
    :class:`~ppl_audit.audits.ood.EnsembleScorer` over them. Raises the
    library's :class:`~ppl_audit.errors.PplAuditError` when a model or the
    data is missing.
    """

    _, spec, seed = load_audit_file(AUDIT_FILE)
    spec = dataclasses.replace(spec, device="cpu")
    loading = dict(cache=cache_dir, data_dir=data_dir, device="cpu")
    trained = {"vae": load_model(spec.vae_ensemble, **loading, kind="vae-ensemble"),
               "beta_vae": load_model(spec.beta_vae_ensemble, **loading, kind="vae-ensemble"),
               "gan": load_model(spec.gan_ensemble, **loading, kind="gan-ensemble")}
    scorer = EnsembleScorer(trained["vae"].module, beta_vae=trained["beta_vae"].module, gan=trained["gan"].module,
                            iwae_samples=spec.iwae_samples, seed=seed)
    return spec, seed, trained, scorer


def column_aurocs(scores_in: dict, scores_out: dict, columns, mask=None) -> dict[str, float]:
    """AUROC (%, 2 decimals) of every column, OoD images ``scores_out[c][mask]`` (all when ``mask`` is None)."""
    return {c: round(100 * ood_metrics(scores_in[c], scores_out[c] if mask is None else scores_out[c][mask])["auroc"],
                     2) for c in columns}


def model_cards(trained: dict) -> dict:
    """``{key: {"card", "recipe_hash"}}`` of loaded ensembles, for a results file."""
    return {k: {"card": t.card.name, "recipe_hash": t.card.recipe_hash} for k, t in trained.items()}
