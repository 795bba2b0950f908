"""The 1-nearest-neighbour baseline of Wang et al. on MNIST: test accuracy and cost.

Every one of the 10,000 MNIST test digits takes the label of its nearest of
the 60,000 training digits (Euclidean distance on [0, 1] pixels); the paper
reports about 96.91%. Also prints the risk-coverage summary of its
confidence (minus the distance) on MNIST alone.

Run (from the repository root):
      .venv/bin/python benchmarks/nearest_neighbour_mnist.py --data-dir ../shared/data   # results/nearest_neighbour_mnist.json
      .venv/bin/python benchmarks/nearest_neighbour_mnist.py --quick   # 100 test digits split in two; no output
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from _common import parse, parser, print_table, quick_data_dir, write_results

from ppl_audit.classifiers.lenet import MNIST_CLASS_NAMES
from ppl_audit.classifiers.nearest_neighbour import NearestNeighbourClassifier
from ppl_audit.data import load_dataset
from ppl_audit.metrics import risk_coverage

PAPER_ACCURACY = 96.91  # Wang et al.'s 1-NN on MNIST (%)
QUICK_IMAGES = 100  # a quick run splits the first test digits in two halves (the tests' fixture has 100)


def _splits(args):
    """(train, test): MNIST's two splits, or for a quick run two halves of its first test digits."""
    data_dir = quick_data_dir(args)
    if not args.quick:
        return load_dataset("mnist", "train", data_dir=data_dir), load_dataset("mnist", "test", data_dir=data_dir)
    test = load_dataset("mnist", "test", data_dir=data_dir)
    half = min(QUICK_IMAGES, len(test)) // 2
    part = lambda a, b: SimpleNamespace(images=test.images[a:b], labels=test.labels[a:b])  # noqa: E731
    return part(0, half), part(half, 2 * half)


def main(argv=None) -> int:
    args = parse(parser(__file__, __doc__), argv)
    train, test = _splits(args)
    clf = NearestNeighbourClassifier(train.images, train.labels, MNIST_CLASS_NAMES)
    start = time.perf_counter()
    labels, similarity = clf.predict(test.images)
    seconds = time.perf_counter() - start
    correct = labels == test.labels
    rc = risk_coverage(similarity, correct)
    row = {"accuracy_percent": round(100 * float(correct.float().mean()), 2), "paper_accuracy_percent": PAPER_ACCURACY,
           "aurc_mnist_only": round(rc["aurc"], 5), "seconds": round(seconds, 2),
           "images_per_second": round(len(test.labels) / seconds, 1)}
    print(f"1-NN on {len(test.labels)} MNIST test digits against {len(train.labels)} training digits "
          f"(torch threads {torch.get_num_threads()})")
    print_table(list(row), [list(row.values())])
    write_results(args, {"rows": [row]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
