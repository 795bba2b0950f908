"""Reproduce the MNIST rows of Choi & Jang's Table 2 (generative-ensemble OoD detection) with the audit.

Runs ``analyses/mnist-ood.toml`` (ensembles loaded from the cache, or trained
first) and prints AUROC (%) per out-of-distribution set and score, the best
column beside the paper's best MNIST figure, and the seconds spent making
the sets and scoring them (model loading excluded).

Run (from the repository root):
      .venv/bin/python benchmarks/ood_mnist.py --data-dir ../shared/data     # results/ood_mnist.json
      .venv/bin/python benchmarks/ood_mnist.py --data-dir ../shared/data --vae-epochs 30 --name ood_mnist_vae_30_epochs
      .venv/bin/python benchmarks/ood_mnist.py --data-dir ../shared/data --vae-likelihood continuous-bernoulli \\
          --name ood_mnist_vae_continuous_bernoulli
      .venv/bin/python benchmarks/ood_mnist.py --data-dir ../shared/data --vae-independent-batches \\
          --name ood_mnist_vae_independent_batches
Exits with status 2 when the ensembles are missing and cannot be trained (no data folder).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path



from _common import missing_cards, parse, parser, print_table, quick_data_dir, set_threads, skip, write_results

from ppl_audit.audits import load_audit_file
from ppl_audit.audits import ood as ood_audit
from ppl_audit.errors import PplAuditError
from ppl_audit.training import load_model

AUDIT_FILE = Path(__file__).resolve().parents[1] / "analyses" / "mnist-ood.toml"
QUICK = {"num_in": 100, "num_out": 20, "iwae_samples": 2, "adversarial_steps": 1}  # every row, a few images


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=())
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--vae-epochs", type=int, default=None,
                   help="train the VAE ensemble for this many epochs instead of its card's (a card variant)")
    p.add_argument("--vae-likelihood", default=None, choices=("bernoulli", "continuous-bernoulli"),
                   help="train the VAE ensemble with this decoder likelihood instead of its card's (a card variant)")
    p.add_argument("--vae-independent-batches", action="store_true",
                   help="train the VAE ensemble with one shuffle of the data per member (a card variant)")
    args = parse(p, argv)
    set_threads(args.threads)
    _, spec, seed = load_audit_file(AUDIT_FILE)
    spec = dataclasses.replace(spec, device="cpu")
    seed = args.seeds[0] if args.seeds else seed  # default: the audit file's
    if args.quick:
        missing = missing_cards(args, [spec.vae_ensemble, spec.beta_vae_ensemble, spec.gan_ensemble])
        if missing or args.vae_epochs or args.vae_likelihood or args.vae_independent_batches:
            return skip(args, f"the weights of {', '.join(missing) or 'the VAE variant'} are not cached "
                              "(a quick run trains nothing)")
        spec = dataclasses.replace(spec, **QUICK)
    args.data_dir = quick_data_dir(args)
    try:

        from ppl_audit.cards import load_card

        loading = dict(cache=args.cache_dir, data_dir=args.data_dir, device="cpu")
        vae_card = load_card(spec.vae_ensemble)
        if args.vae_epochs is not None:
            vae_card = vae_card.with_overrides(training={"epochs": args.vae_epochs})
        if args.vae_likelihood is not None:
            vae_card = vae_card.with_overrides(architecture={"likelihood": args.vae_likelihood})
        if args.vae_independent_batches:
            vae_card = vae_card.with_overrides(training={"independent_batches": True})
        trained = {"vae": load_model(vae_card, **loading, kind="vae-ensemble"),
                   "beta_vae": load_model(spec.beta_vae_ensemble, **loading, kind="vae-ensemble"),
                   "gan": load_model(spec.gan_ensemble, **loading, kind="gan-ensemble")}
    except PplAuditError as exc:
        print(f"ood_mnist: error: the ensembles are missing and cannot be trained: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    report = ood_audit.run(spec, seed=seed, data_dir=args.data_dir, models={k: t.module for k, t in trained.items()})
    seconds = time.perf_counter() - start
    columns = report.metrics["columns"]
    rows = []
    for name, row in report.metrics["rows"].items():
        rows.append({"dataset": name, "num_images": row["num_images"],
                     **{f"auroc_percent_{c}": round(100 * row["columns"][c]["auroc"], 2) for c in columns},
                     **{f"average_precision_percent_{c}": round(100 * row["columns"][c]["average_precision"], 2)
                        for c in columns},
                     **{f"fpr_at_95_tpr_percent_{c}": round(100 * row["columns"][c]["fpr_at_95_tpr"], 2)
                        for c in columns},
                     "best_column": row["best_column"], "best_auroc_percent": row["best_auroc_percent"],
                     "paper_best_auroc_percent": row["paper_best_auroc_percent"],
                     "at_or_above_paper": row["at_or_above_paper"]})
    print(f"AUROC (%), {report.metrics['num_in']} MNIST test digits in-distribution, seed {seed}")
    print_table(["dataset", *columns, "best", "paper best", ">= paper"],
                [[r["dataset"], *[r[f"auroc_percent_{c}"] for c in columns], r["best_auroc_percent"],
                  r["paper_best_auroc_percent"], r["at_or_above_paper"]] for r in rows])
    print(f"sets made in {report.timings['ood_sets_seconds']:.1f} s, scored in {report.timings['scoring_seconds']:.1f} s "
          f"(total {seconds:.1f} s)")
    write_results(args, {
        "seed": seed, "spec": dataclasses.asdict(spec), "columns": columns, "rows": rows,
        "rows_at_or_above_paper": report.metrics["rows_at_or_above_paper"],
        "information_criteria": report.metrics["information_criteria"],
        "models": {k: {"card": t.card.name, "recipe_hash": t.card.recipe_hash,
                       **{m: v for m, v in t.metrics.items() if not isinstance(v, (list, dict))}}
                   for k, t in trained.items()},
        "seconds": {"ood_sets": round(report.timings["ood_sets_seconds"], 2),
                    "scoring": round(report.timings["scoring_seconds"], 2), "total": round(seconds, 2)},
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
