"""What one SVI epoch of the Bayesian LeNet-5 costs against one epoch of the same deterministic LeNet-5.

Both train on the same MNIST training images with the same batch size (128,
the paper's) and Adam; each row times full epochs after one warm-up epoch,
and reports the best of ``--repeats`` (the least disturbed by other work on
the machine). Rows:

* ``lenet``: the deterministic LeNet-5 (cross-entropy);
* ``bayesian-flipout``: the Bayesian LeNet-5's ELBO with the Flipout estimator
  (the card's default);
* ``bayesian-weight-sample``: the same ELBO through Pyro's
  ``TraceMeanField_ELBO`` on the Pyro model and guide (one weight draw per batch).

The issue's bar: a Bayesian epoch costs at most 3x a deterministic one.

Run (from the repository root):
      .venv/bin/python benchmarks/bnn_epoch_cost.py --data-dir ../shared/data   # results/bnn_epoch_cost.json
      .venv/bin/python benchmarks/bnn_epoch_cost.py --data-dir ../shared/data --num-train 12800 --repeats 1
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


from _common import one_seed, parse, parser, print_table, quick_data_dir, set_threads, write_results

from ppl_audit.classifiers.bayesian_lenet import BayesianLeNet
from ppl_audit.classifiers.lenet import LeNet5
from ppl_audit.data import load_dataset

BATCH = 128  # the paper's batch size
GOAL_RATIO = 3.0  # the bar
QUICK_IMAGES = 64  # a quick run: one batch of the test split (the tests' fixture holds no training split)


def _epoch(step, images, labels, generator) -> float:
    order = torch.randperm(len(images), generator=generator)
    start = time.perf_counter()
    for idx in order.split(BATCH):
        step(images[idx], labels[idx])
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = parser(__file__, __doc__)
    p.add_argument("--num-train", type=int, default=None, help="first N training images (default all 60,000)")
    p.add_argument("--repeats", type=int, default=2, help="timed epochs per row (best is reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    args = parse(p, argv)
    seed = one_seed(args)
    set_threads(args.threads)
    split, limit = ("test", QUICK_IMAGES) if args.quick else ("train", args.num_train)
    args.repeats = 1 if args.quick else args.repeats
    train = load_dataset("mnist", split, data_dir=quick_data_dir(args), limit=limit)
    x, y, n = train.images, train.labels, len(train)
    torch.manual_seed(seed)
    lenet = LeNet5()
    lenet_opt = torch.optim.Adam(lenet.parameters(), lr=1e-3)
    bnn = BayesianLeNet()
    bnn_opt = torch.optim.Adam(bnn.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)

    def lenet_step(a, b):
        loss = F.cross_entropy(lenet(a), b)
        lenet_opt.zero_grad(set_to_none=True)
        loss.backward()
        lenet_opt.step()

    def bnn_step(estimator):
        def step(a, b):
            loss = bnn.negative_elbo(a, b, n, estimator=estimator, generator=generator) / n
            bnn_opt.zero_grad(set_to_none=True)
            loss.backward()
            bnn_opt.step()
        return step

    rows, seconds = [], {}
    for name, step in (("lenet", lenet_step), ("bayesian-flipout", bnn_step("flipout")),
                       ("bayesian-weight-sample", bnn_step("weight-sample"))):
        _epoch(step, x, y, generator)  # warm-up
        times = [_epoch(step, x, y, generator) for _ in range(args.repeats)]
        seconds[name] = min(times)
    for name, s in seconds.items():
        ratio = s / seconds["lenet"]
        rows.append({"row": name, "epoch_seconds": round(s, 3), "images_per_second": round(n / s, 1),
                     "ratio_to_lenet": round(ratio, 3),
                     "meets_goal": None if name == "lenet" else bool(ratio <= GOAL_RATIO)})
    print(f"one epoch of {n} MNIST training images, batch {BATCH}, best of {args.repeats} "
          f"(torch threads {torch.get_num_threads()})")
    print_table(["row", "epoch s", "images/s", "x LeNet", f"<= {GOAL_RATIO:g}x"],
                [[r["row"], r["epoch_seconds"], r["images_per_second"], r["ratio_to_lenet"], r["meets_goal"]]
                 for r in rows])
    write_results(args, {"seed": seed, "num_train": n, "split": split, "batch_size": BATCH,
                         "repeats": args.repeats, "goal_ratio": GOAL_RATIO, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
