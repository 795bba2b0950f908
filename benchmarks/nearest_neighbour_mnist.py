"""The 1-nearest-neighbour baseline of Wang et al. on MNIST: test accuracy and cost.

Every one of the 10,000 MNIST test digits takes the label of its nearest of
the 60,000 training digits (Euclidean distance on [0, 1] pixels); the paper
reports about 96.91%. Also prints the risk-coverage summary of its
confidence (minus the distance) on MNIST alone.

Run (from the repository root):
      .venv/bin/python benchmarks/nearest_neighbour_mnist.py --data-dir ../shared/data   # results/nearest_neighbour_mnist.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, print_table, write_results  # noqa: E402

from ppl_audit.classifiers.lenet import MNIST_CLASS_NAMES  # noqa: E402
from ppl_audit.classifiers.nearest_neighbour import NearestNeighbourClassifier  # noqa: E402
from ppl_audit.data import load_dataset  # noqa: E402
from ppl_audit.metrics import risk_coverage  # noqa: E402

PAPER_ACCURACY = 96.91  # Wang et al.'s 1-NN on MNIST (%)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--name", default="nearest_neighbour_mnist")
    args = parser.parse_args(argv)
    train = load_dataset("mnist", "train", data_dir=args.data_dir)
    test = load_dataset("mnist", "test", data_dir=args.data_dir)
    clf = NearestNeighbourClassifier(train.images, train.labels, MNIST_CLASS_NAMES)
    start = time.perf_counter()
    labels, similarity = clf.predict(test.images)
    seconds = time.perf_counter() - start
    correct = labels == test.labels
    rc = risk_coverage(similarity, correct)
    row = {"accuracy_percent": round(100 * float(correct.float().mean()), 2), "paper_accuracy_percent": PAPER_ACCURACY,
           "aurc_mnist_only": round(rc["aurc"], 5), "seconds": round(seconds, 2),
           "images_per_second": round(len(test) / seconds, 1)}
    print(f"1-NN on {len(test)} MNIST test digits against {len(train)} training digits "
          f"(torch threads {torch.get_num_threads()})")
    print_table(list(row), [list(row.values())])
    path = write_results(args.name, {"machine": machine(), "rows": [row]})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
