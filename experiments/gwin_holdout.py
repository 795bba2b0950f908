"""GWIN variants compared on held-out *training* digits, so that a choice among them need not touch the test set.

``experiments/gwin_variants.py`` compares GWIN training variants on the MNIST
test digits, which are also the table's: picking the best there is selection
on the test set (the card says so). Here the Bayesian LeNet-5 and every
variant's GWIN train on the first ``60,000 - holdout`` training digits only
(the same cards otherwise), and the reject-transform-relabel pipeline
(``evaluate_gwin``: S = 10, R runs) is scored on the last ``holdout``
training digits, which neither model saw. A variant that wins here can then
be measured once on the test set.

Run (from the repository root; the BNN trains in ~3 minutes, each variant's GWIN in ~6):
      .venv/bin/python experiments/gwin_holdout.py --data-dir ../shared/data \\
          --variants uniform-inputs card uncertain-three-quarters uncertain-half-shift2 \\
          transformation-3 transformation-30 transformation-100 steps-600 steps-18000
writes results/gwin_holdout.json (steps-18000 trains for ~50 minutes; each cached variant scores in seconds). Exits with status 2 when the data are missing.
"""

from __future__ import annotations

import sys

import torch


from _common import parse, parser as cli, print_table, write_results
from gwin_variants import VARIANTS, variant_rows

from ppl_audit.errors import PplAuditError

MNIST_TRAIN = 60_000


def main(argv=None) -> int:
    parser = cli(__file__, __doc__)
    parser.add_argument("--variants", nargs="+", default=["uniform-inputs", "card"], choices=list(VARIANTS))
    parser.add_argument("--holdout", type=int, default=10_000, help="last training digits kept out of training")
    parser.add_argument("--runs", type=int, default=2)
    args = parse(parser, argv)
    if not 0 < args.holdout < MNIST_TRAIN:
        parser.error(f"--holdout must be in 1..{MNIST_TRAIN - 1}, got {args.holdout}")
    num_train = MNIST_TRAIN - args.holdout
    try:
        from ppl_audit.data import load_dataset

        train = load_dataset("mnist", "train", data_dir=args.data_dir)
        held = train.images[num_train:], train.labels[num_train:]
        rows = [row for name in args.variants
                for row in variant_rows(name, *held, num_train=num_train, cache_dir=args.cache_dir,
                                        data_dir=args.data_dir, runs=args.runs, seed=args.seeds[0])]
    except PplAuditError as exc:
        print(f"gwin_holdout: error: {exc}", file=sys.stderr)
        return 2
    print(f"Held-out training digits {num_train}..{MNIST_TRAIN - 1} (neither model trained on them), S = 10, "
          f"R = {args.runs}, seed {args.seeds[0]}")
    print_table(["variant", "tau", "% rej", "BNN acc rej", "BNN+GWIN acc rej", "train s"],
                [[r["variant"], r["tau"], r["rejected_percent_mean"], r["bnn_accuracy_rejected_percent_mean"],
                  r["gwin_accuracy_rejected_percent_mean"], r["training_seconds"]] for r in rows])
    write_results(args, {"seed": args.seeds[0], "runs": args.runs,
                                     "num_train": num_train, "holdout": args.holdout, "rows": rows,
                                     "torch_threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
