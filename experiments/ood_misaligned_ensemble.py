"""What an ensemble's AUROC becomes when each member scores a different random draw of the images.

Choi & Jang's public code (github.com/hschoi1/rich_latent, in the version we
read: ``vae_wgan/tools/analysis.py`` ``ensemble_analysis`` and
``tools/get_data.py`` ``build_eval_helper``) builds the evaluation sets once
*per member*, each time drawing ``each_size`` images with
``np.random.choice`` and no visible seed, and then averages the members'
scores position by position. If that is what ran, the "ensemble mean" at a
position averages five *different* images, which narrows every set's score
distribution and raises AUROC with the number of members; the "variance"
is then a variance across images, not across models. Its own logged figures
(``vae_wgan/plots_and_pickles/vae_mnist.txt``) fit that: one model's ELBO
gives 0.85 AUROC on horizontal flips, 5 models' mean 0.98, 10 models' 0.9997.
We cannot tell from the code alone whether the paper's Table 2 was made this
way, so this script only measures what the protocol does to *our* ensemble.

For each OoD row, with our 5-member VAE ensemble's IWAE log-likelihoods
(the audit's: ``common_draws``, 16 samples):

* ``aligned``: every member scores the same images; columns ``log p``
  (member 0), ensemble mean and WAIC (mean - variance), as in the audit
  (its ``ddof = 1`` variance, so the WAIC column equals the audit's table);
* ``misaligned``: each member scores its own random draw (with replacement)
  of ``each_size`` images from the MNIST test digits and from the OoD set,
  and the members' scores are combined position by position, as that code
  does; mean and spread over ``--repeats`` redraws.

Run (from the repository root; ~1 minute with the ensembles cached):
      .venv/bin/python experiments/ood_misaligned_ensemble.py --data-dir ../shared/data
writes results/ood_misaligned_ensemble.json. Exits with status 2 when the data or the ensembles are missing.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch


from _common import parse, parser as cli, print_table, write_results
from _ood_models import load_ood_models, model_cards

from ppl_audit.audits.ood import ADVERSARIAL, PAPER_BEST_AUROC, out_of_distribution_sets
from ppl_audit.errors import PplAuditError
from ppl_audit.metrics import ood_metrics

EACH_SIZE = 1000  # images per set in that code's evaluation (its each_size default)


def _auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """AUROC (%) of OoD detection when *lower* scores mean OoD (log-likelihoods, WAIC)."""
    return 100 * ood_metrics(-scores_in, -scores_out)["auroc"]


def combine(log_lik: np.ndarray, index: np.ndarray, ddof: int = 0) -> dict[str, np.ndarray]:
    """Position-wise ensemble mean and WAIC of ``log_lik (K, N)`` read at ``index (K, M)``: member k at its own rows.

    ``ddof`` is the variance's: 1 as the audit's WAIC, 0 as ``np.var`` in that code.

    Examples
    --------
    >>> ll = np.array([[0.0, 2.0], [4.0, 6.0]])
    >>> {k: v.tolist() for k, v in combine(ll, np.array([[0, 1], [0, 1]])).items()}  # aligned
    {'mean': [2.0, 4.0], 'WAIC': [-2.0, 0.0]}
    >>> combine(ll, np.array([[1, 0], [0, 1]]))["mean"].tolist()  # member 0 reads the other image first
    [3.0, 3.0]
    """
    picked = np.take_along_axis(log_lik, index, axis=1)
    mean = picked.mean(0)
    return {"mean": mean, "WAIC": mean - picked.var(0, ddof=ddof)}


def main(argv=None) -> int:
    parser = cli(__file__, __doc__)
    parser.add_argument("--repeats", type=int, default=20, help="redraws of the misaligned protocol")
    args = parse(parser, argv)
    try:
        from ppl_audit.data import load_dataset

        spec, seed, trained, scorer = load_ood_models(args.data_dir, args.cache_dir)
        mnist = load_dataset("mnist", "test", data_dir=args.data_dir).images
        rows = [r for r in spec.rows if r != ADVERSARIAL]
        sets = out_of_distribution_sets(rows, mnist, num_out=spec.num_out, data_dir=args.data_dir,
                                        generator=torch.Generator().manual_seed(seed))
    except PplAuditError as exc:
        print(f"ood_misaligned_ensemble: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with torch.no_grad():
        log_lik = {"mnist": scorer.score(mnist)[1].double().numpy()}
        for row, images in sets.items():
            log_lik[row] = scorer.score(images)[1].double().numpy()
    members = log_lik["mnist"].shape[0]
    rng = np.random.default_rng(seed)

    def aligned(name: str) -> dict[str, np.ndarray]:
        n = log_lik[name].shape[1]
        return {"log p": log_lik[name][0],
                **combine(log_lik[name], np.broadcast_to(np.arange(n), (members, n)), ddof=1)}

    def misaligned(name: str) -> dict[str, np.ndarray]:
        return combine(log_lik[name], rng.integers(0, log_lik[name].shape[1], size=(members, EACH_SIZE)))

    base = aligned("mnist")
    results = []
    for row in rows:
        out = aligned(row)
        draws = {"mean": [], "WAIC": []}
        for _ in range(args.repeats):
            inside, outside = misaligned("mnist"), misaligned(row)
            for column in draws:
                draws[column].append(_auroc(inside[column], outside[column]))
        results.append({
            "dataset": row,
            **{f"aligned_auroc_percent_{c}": round(_auroc(base[c], out[c]), 2) for c in ("log p", "mean", "WAIC")},
            **{f"misaligned_auroc_percent_{c}_mean": round(float(np.mean(v)), 2) for c, v in draws.items()},
            **{f"misaligned_auroc_percent_{c}_std": round(float(np.std(v)), 2) for c, v in draws.items()},
            "paper_best_auroc_percent": PAPER_BEST_AUROC[row]})
    seconds = time.perf_counter() - start
    print(f"AUROC (%) of our {members}-member VAE ensemble's log-likelihoods; misaligned: each member scores its own "
          f"random {EACH_SIZE} images per set, mean ± std over {args.repeats} redraws")
    print_table(["dataset", "log p", "mean", "WAIC", "misaligned mean", "misaligned WAIC", "paper best"],
                [[r["dataset"], r["aligned_auroc_percent_log p"], r["aligned_auroc_percent_mean"],
                  r["aligned_auroc_percent_WAIC"],
                  f"{r['misaligned_auroc_percent_mean_mean']} ± {r['misaligned_auroc_percent_mean_std']}",
                  f"{r['misaligned_auroc_percent_WAIC_mean']} ± {r['misaligned_auroc_percent_WAIC_std']}",
                  r["paper_best_auroc_percent"]] for r in results])
    print(f"{seconds:.1f} s")
    write_results(args, {
        "seed": seed, "members": members, "each_size": EACH_SIZE, "repeats": args.repeats,
        "rows": results, "models": model_cards({"vae": trained["vae"]}),
        "seconds": round(seconds, 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
