"""Per-class GAN variants scored by synthesis accuracy on held-out training digits (never the test set).

The per-class MLP WGAN-GP generators of models/mnist-class-gan.toml fall short
of Wang et al.'s 97.81% classification-by-synthesis accuracy because their
range does not cover test digits well enough (their accuracy on training
digits is far above their test accuracy). This script compares changes to the
card without touching the test digits:

1. it trains the card's GANs, with the --set overrides, on the first
   60,000 - --holdout training digits for --epochs epochs, tracking the
   exponential moving average of the generators' weights for each --decays
   value alongside the last weights, all from one run (ppl_audit's own
   trainer and its per-step hook). A GAN generator's weights oscillate around
   an equilibrium and their average lies nearer it (Yazici et al., "The
   Unusual Effectiveness of Averaging in GAN Training", 2019);
2. it runs the default latent search (ppl_audit.classifiers.synthesis) of
   each set of generators over the last --holdout training digits, which the
   run never saw, and prints their synthesis accuracy and search time.

Run (from the repository root; about 15 minutes on 2 CPU cores at the defaults):
      .venv/bin/python benchmarks/class_gan_holdout.py --data-dir ../shared/data    # results/class_gan_holdout.json
      .venv/bin/python benchmarks/class_gan_holdout.py --data-dir ../shared/data \\
          --set architecture.generator_hidden='[512, 1024]' --name class_gan_holdout_wide
"""

from __future__ import annotations

import argparse
import copy
import sys
import tomllib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, print_table, write_results  # noqa: E402

from ppl_audit.cards import load_card  # noqa: E402
from ppl_audit.classifiers.synthesis import SearchConfig, SynthesisClassifier  # noqa: E402
from ppl_audit.data import load_dataset  # noqa: E402
from ppl_audit.generative.class_generators import ParameterAverage, train_class_gan  # noqa: E402

MNIST_TRAIN = 60_000


def parse_override(text: str) -> tuple[str, str, object]:
    """``"table.key=TOML value"`` -> ``(table, key, value)``.

    Examples
    --------
    >>> parse_override("architecture.generator_hidden=[512, 1024]")
    ('architecture', 'generator_hidden', [512, 1024])
    """
    name, sep, value = text.partition("=")
    table, dot, key = name.strip().partition(".")
    if not (sep and dot and table and key):
        raise argparse.ArgumentTypeError(f"--set needs table.key=value, got {text!r}")
    try:
        return table, key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError as error:
        raise argparse.ArgumentTypeError(f"--set {name}: {value!r} is not a TOML value ({error})") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--card", default="mnist-class-gan")
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--holdout", type=int, default=4000, help="last training digits held out for scoring")
    parser.add_argument("--decays", type=float, nargs="*", default=[0.99, 0.999])
    parser.add_argument("--set", type=parse_override, action="append", default=[], metavar="TABLE.KEY=VALUE",
                        help="override a card key (TOML value), e.g. architecture.generator_hidden='[512, 1024]'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="class_gan_holdout")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not 0 < args.holdout < MNIST_TRAIN:
        parser.error(f"--holdout must lie in (0, {MNIST_TRAIN}), got {args.holdout}")
    tables: dict[str, dict] = {"training": {"epochs": args.epochs, "generator_ema_decay": 0.0},
                               "data": {"num_train": MNIST_TRAIN - args.holdout}}
    for table, key, value in args.set:
        tables.setdefault(table, {})[key] = value
    card = load_card(args.card).with_overrides(**tables)
    overrides = [f"{t}.{k}={v}" for t, k, v in args.set]
    averages: dict[float, ParameterAverage] = {}

    def track(gan, step):
        if not averages:
            averages.update({d: ParameterAverage(gan.generator, d) for d in args.decays})
        for average in averages.values():
            average.update(gan.generator)

    def progress(task, done, total):
        if done % 500 == 0 or done == total:
            print(f"{task}: {done}/{total} generator steps", flush=True)

    result = train_class_gan(card, data_dir=args.data_dir, device="cpu", progress=progress, on_generator_step=track)
    held = load_dataset("mnist", "train", data_dir=args.data_dir)
    images, labels = held.images[-args.holdout:], held.labels[-args.holdout:]
    variants = {"last weights": result.module}
    for decay, average in averages.items():
        gan = copy.deepcopy(result.module)
        average.copy_to(gan.generator)
        variants[f"average, decay {decay}"] = gan
    config = SearchConfig()
    rows, results = [], {}
    for name, gan in variants.items():
        search = SynthesisClassifier(gan.eval(), config=config).search(images)
        errors = int((search.labels != labels).sum())
        results[name] = {"errors": errors, "accuracy_percent": round(100 * (1 - errors / len(labels)), 2),
                         "search_seconds": round(search.seconds, 1)}
        rows.append([name, errors, results[name]["accuracy_percent"], results[name]["search_seconds"]])
    print(f"{' '.join([card.name, *overrides])}: {args.epochs} epochs on the first {MNIST_TRAIN - args.holdout} "
          f"training digits "
          f"({result.metrics['generator_steps']} generator steps, {result.metrics['seconds']:.0f} s); "
          f"scored on the last {args.holdout}")
    print_table(["generators", "errors", "accuracy %", "search (s)"], rows)
    path = write_results(args.name, {
        "machine": machine(), "card": card.name, "overrides": overrides,
        "recipe_hash": card.recipe_hash, "epochs": args.epochs, "num_train": MNIST_TRAIN - args.holdout,
        "holdout": args.holdout, "threads": args.threads, "search": vars(config),
        "generator_steps": result.metrics["generator_steps"], "train_seconds": round(result.metrics["seconds"], 1),
        "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
