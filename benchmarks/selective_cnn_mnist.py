"""The CNN's risk-coverage audit on MNIST mixed with out-of-distribution images (Wang et al., Sec. 5).

The LeNet-5 of the level-set audits (models/mnist-lenet5.toml) labels the
10,000 MNIST test digits plus the notMNIST test letters and the Omniglot
subset, which count as wrong whatever label they get; its confidence is the
max-softmax. Prints the AURC, the lowest attainable risk (ties at one
confidence are never split) with its coverage, and how many OoD images get
the CNN's maximum confidence. Wang et al. found a lowest risk of 0.061 for
their CNN on MNIST + Omniglot, with 343 Omniglot images at confidence 1.

Run (from the repository root):
      .venv/bin/python benchmarks/selective_cnn_mnist.py --data-dir ../shared/data   # results/selective_cnn_mnist.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, print_table, write_results  # noqa: E402

from ppl_audit.classifiers.lenet import load_lenet  # noqa: E402
from ppl_audit.data import load_dataset  # noqa: E402
from ppl_audit.metrics import risk_coverage  # noqa: E402

OOD_SETS = ("omniglot", "notmnist")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--name", default="selective_cnn_mnist")
    args = parser.parse_args(argv)
    clf = load_lenet(cache=args.cache_dir, data_dir=args.data_dir, device="cpu")
    mnist = load_dataset("mnist", "test", data_dir=args.data_dir)
    rows = []
    torch.set_grad_enabled(False)  # evaluation only
    for mix in ((), ("omniglot",), OOD_SETS):
        correct, is_ood = [], [torch.zeros(len(mnist), dtype=torch.bool)]
        probs = [clf.probs(mnist.images)]
        correct.append(probs[0].argmax(1) == mnist.labels)
        for name in mix:
            ood = load_dataset(name, data_dir=args.data_dir).images
            p = clf.probs(ood)
            probs.append(p)
            correct.append(torch.zeros(len(ood), dtype=torch.bool))
            is_ood.append(torch.ones(len(ood), dtype=torch.bool))
        confidence = torch.cat(probs).max(1).values
        correct, is_ood = torch.cat(correct), torch.cat(is_ood)
        rc = risk_coverage(confidence, correct)
        top = confidence == confidence.max()
        rows.append({"test_set": "MNIST" + "".join(f" + {m}" for m in mix), "num_inputs": rc["num_inputs"],
                     "num_ood": int(is_ood.sum()), "aurc": round(rc["aurc"], 5), "min_risk": round(rc["min_risk"], 5),
                     "coverage_at_min_risk": round(rc["coverage_at_min_risk"], 4),
                     "risk_at_full_coverage": round(rc["risk_at_full_coverage"], 4),
                     "max_confidence": float(confidence.max()), "inputs_at_max_confidence": int(top.sum()),
                     "ood_at_max_confidence": int((top & is_ood).sum())})
    print("LeNet-5 max-softmax as confidence; out-of-distribution images count as wrong")
    print_table(list(rows[0]), [list(r.values()) for r in rows])
    path = write_results(args.name, {"machine": machine(), "classifier": clf.trained.card.name,
                                     "recipe_hash": clf.trained.card.recipe_hash, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
