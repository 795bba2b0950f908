"""SDIM on MNIST: the paper's Table 2 (accuracy on what is kept, rejection rate) and Table 3 (OoD rejection).

Loads the SDIM of ``models/mnist-sdim.toml`` from the cache (training it
first when it is missing: about 16 minutes on one CPU core), then prints

* Table 2: on the 10,000 MNIST test digits, the accuracy on all of them,
  the accuracy on the kept ones and the rejection rate, with the per-class
  thresholds at the 1st and 2nd percentiles of the training log-likelihoods,
  beside Wang & Yiu's MNIST figures (IJCAI 2020, Table 2: 1st percentile,
  rejection 3.02%, accuracy on the kept 99.95%; their 2nd-percentile row is
  not recorded here);
* Table 3: the fraction of out-of-distribution images rejected at each
  percentile, for the notMNIST test letters (10,000), the staged Omniglot
  subset (4,840) and the staged Fashion-MNIST test subset (the first 2,000):
  these are the sets of ``/work/shared/data``, not the paper's exact OoD
  sets, so the paper's Table 3 figures are not put beside them.

Run (from the repository root):
      OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sdim_mnist.py --data-dir ../shared/data   # results/sdim_mnist.json
      .venv/bin/python benchmarks/sdim_mnist.py --quick   # 100 digits, 20 images a set; skipped without the model
Exits with status 2 when the model is missing and cannot be trained (no data folder).
"""

from __future__ import annotations

import sys
import time

import torch


from _common import missing_cards, parse, parser, print_table, quick_data_dir, skip, write_results

from ppl_audit.classifiers.sdim import PERCENTILES, ood_rejection_rate, selective_table
from ppl_audit.data import load_dataset
from ppl_audit.errors import PplAuditError
from ppl_audit.training import load_model

OOD_SETS = ("notmnist", "omniglot", "fashion-mnist")  # as staged in the data folder (see its README)
# Wang & Yiu (IJCAI 2020), Table 2, MNIST; None: not recorded here.
PAPER_TABLE_2 = {1: {"rejection_rate_percent": 3.02, "accuracy_kept_percent": 99.95},
                 2: {"rejection_rate_percent": None, "accuracy_kept_percent": None}}
QUICK_LIMITS = {"mnist": 100, "ood": 20}  # images a quick run reads from MNIST and from each OoD set


def _percent(value):
    return None if value is None else round(100 * value, 3)


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=())
    p.add_argument("--card", default="mnist-sdim", help="an sdim-classifier card name or path")
    p.add_argument("--threads", type=int, default=1)
    args = parse(p, argv)
    torch.set_num_threads(args.threads)
    limits = QUICK_LIMITS if args.quick else {"mnist": None, "ood": None}
    if args.quick and missing_cards(args, [args.card]):
        return skip(args, f"the weights of {args.card} are not cached (a quick run trains nothing)")
    args.data_dir = quick_data_dir(args)
    try:
        clf = load_model(args.card, cache=args.cache_dir, data_dir=args.data_dir, device="cpu",
                         kind="sdim-classifier").model
    except PplAuditError as exc:
        print(f"sdim_mnist: error: the SDIM is missing and cannot be trained: {exc}", file=sys.stderr)
        return 2
    torch.set_grad_enabled(False)  # evaluation only
    start = time.perf_counter()
    mnist = load_dataset("mnist", "test", data_dir=args.data_dir, limit=limits["mnist"])
    table2 = []
    for row in selective_table(clf, mnist.images, mnist.labels, PERCENTILES):
        paper = PAPER_TABLE_2[row["percentile"]]
        table2.append({"percentile": row["percentile"], "num_images": row["num_images"], "num_kept": row["num_kept"],
                       "accuracy_all_percent": _percent(row["accuracy_all"]),
                       "accuracy_kept_percent": _percent(row["accuracy_kept"]),
                       "rejection_rate_percent": _percent(row["rejection_rate"]),
                       "paper_accuracy_kept_percent": paper["accuracy_kept_percent"],
                       "paper_rejection_rate_percent": paper["rejection_rate_percent"]})
    table3 = []
    for name in OOD_SETS:
        try:
            ood = load_dataset(name, data_dir=args.data_dir, limit=limits["ood"])
        except PplAuditError as exc:
            if not args.quick:
                raise
            print(f"sdim_mnist: quick run: {name} left out (not in {args.data_dir})")
            continue
        table3.append({"dataset": name, "num_images": len(ood),
                       **{f"rejected_percent_p{q}": _percent(ood_rejection_rate(clf, ood.images, q))
                          for q in PERCENTILES}})
    seconds = time.perf_counter() - start
    metrics = clf.info["metrics"]
    print(f"SDIM ({clf.trained.card.name}, recipe {clf.trained.card.recipe_hash}): test accuracy "
          f"{100 * metrics['test_accuracy']:.2f}%, trained in {metrics['seconds']:.0f} s")
    print("\nTable 2: MNIST test digits, per-class thresholds at the q-th percentile of training log-likelihoods")
    print_table(["percentile", "accuracy all %", "accuracy kept %", "rejected %", "paper kept %", "paper rejected %"],
                [["n/a" if v is None else v
                  for v in (r["percentile"], r["accuracy_all_percent"], r["accuracy_kept_percent"],
                            r["rejection_rate_percent"], r["paper_accuracy_kept_percent"],
                            r["paper_rejection_rate_percent"])] for r in table2])
    print("\nTable 3: out-of-distribution images rejected (%)")
    print_table(["dataset", "images", *[f"p{q}" for q in PERCENTILES]],
                [[r["dataset"], r["num_images"], *[r[f"rejected_percent_p{q}"] for q in PERCENTILES]] for r in table3])
    print(f"\nevaluated in {seconds:.1f} s")
    write_results(args, {
        "seed": None, "seed_note": "evaluates a cached model on fixed images: nothing random",
        "model": {"card": clf.trained.card.name, "recipe_hash": clf.trained.card.recipe_hash,
                  **{k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}},
        "test_accuracy": metrics["test_accuracy"],
        "training_seconds": metrics["seconds"],
        "rows": table2,
        "ood_rows": table3,
        "paper": {"source": "Wang & Yiu, IJCAI 2020, Table 2 (MNIST)", "table_2": PAPER_TABLE_2,
                  "table_3": "not recorded here; the staged OoD sets differ from the paper's"},
        "seconds": {"evaluation": round(seconds, 2)},
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
