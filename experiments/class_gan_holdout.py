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
2. it runs the latent search (ppl_audit.classifiers.synthesis) of each set
   of generators over the last --holdout training digits, which the run never
   saw, once per --search setting (default: the default search), and prints
   their synthesis accuracy and search time.

--headroom R asks whether the errors are the search's or the generators':
the images whose two closest classes are within --headroom-ratio of each
other are searched R more times with a far stronger search, keeping each
(image, class)'s best distance; the errors left there are the generators'.

--save-dir keeps the trained generators (safetensors, checked by sha256);
--load-dir scores generators saved that way instead of training again, so
search settings can be compared on the same generators. The JSON's
``results`` maps each set of generators to each search setting's figures.

Run (from the repository root; about 25 minutes on 2 CPU cores at the defaults). The card's
generators were [256, 512] when the first two results were made and are [512, 1024] now:
      .venv/bin/python experiments/class_gan_holdout.py --data-dir ../shared/data \\
          --set architecture.generator_hidden='[256, 512]'          # results/class_gan_holdout.json
      .venv/bin/python experiments/class_gan_holdout.py --data-dir ../shared/data \\
          --name class_gan_holdout_wide                              # results/class_gan_holdout_wide.json
Search settings for the shipped card's generators (weight average 0.999; results/class_gan_holdout_search.json):
      .venv/bin/python experiments/class_gan_holdout.py --data-dir ../shared/data \\
          --decays 0.999 --averages-only --save-dir /tmp/holdout-gans \\
          --search steps=100 --search steps=100,learning_rate=0.1,draws=5000 \\
          --search steps=200,learning_rate=0.1,draws=5000 --name class_gan_holdout_search
Longer training and slower averages, scored at 240 and 480 epochs (about 80 minutes):
      .venv/bin/python experiments/class_gan_holdout.py --data-dir ../shared/data --epochs 480 \\
          --decays 0.999 0.9995 0.9999 --checkpoints 240 --averages-only --save-dir /tmp/holdout-gans-480 \\
          --name class_gan_holdout_long                          # results/class_gan_holdout_long.json
Whether the errors left are the search's (after the two runs above; about 5 minutes each):
      .venv/bin/python experiments/class_gan_holdout.py --data-dir ../shared/data --epochs 480 \\
          --load-dir /tmp/holdout-gans-480 --only 'average, decay 0.9999' --headroom 4 \\
          --name class_gan_holdout_headroom_480                  # results/class_gan_holdout_headroom_480.json
      .venv/bin/python experiments/class_gan_holdout.py --data-dir ../shared/data --epochs 480 \\
          --load-dir /tmp/holdout-gans-480 --only 'average, decay 0.999' --headroom 4 \\
          --name class_gan_holdout_headroom_480_decay999         # results/class_gan_holdout_headroom_480_decay999.json
      .venv/bin/python experiments/class_gan_holdout.py --data-dir ../shared/data --load-dir /tmp/holdout-gans \\
          --only 'average, decay 0.999' --search steps=100,learning_rate=0.1,draws=5000 --headroom 4 \\
          --name class_gan_holdout_headroom                      # results/class_gan_holdout_headroom.json
How many restarts the refinement needs (the shipped card's decay; 4 restarts: 33 errors left, 2: 33, 1: 34):
      .venv/bin/python experiments/class_gan_holdout.py --data-dir ../shared/data --epochs 480 \\
          --load-dir /tmp/holdout-gans-480 --only 'average, decay 0.999' --headroom 2 \\
          --name class_gan_holdout_headroom_480_decay999_restarts2   # and --headroom 1 ... _restarts1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import time
import tomllib
from pathlib import Path

import torch


from _common import line_progress, parse, parser as cli, print_table, write_results

from ppl_audit.cache import load_weights, save_weights
from ppl_audit.cards import load_card
from ppl_audit.classifiers.synthesis import (
    SearchConfig, SynthesisClassifier, contested_images, refine_contested)
from ppl_audit.data import load_dataset
from ppl_audit.generative.class_generators import (
    ParameterAverage, build_class_gan, generator_steps_per_epoch, train_class_gan)

MNIST_TRAIN = 60_000


def toml_value(flag: str, name: str, value: str):
    """``value`` read as a TOML value; an argparse error naming ``flag`` and ``name`` otherwise."""
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError as error:
        raise argparse.ArgumentTypeError(f"{flag} {name}: {value!r} is not a TOML value ({error})") from None


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
    return table, key, toml_value("--set", name, value)


def parse_search(text: str) -> SearchConfig:
    """``"key=value,key=value"`` (fields of SearchConfig) -> a SearchConfig.

    Examples
    --------
    >>> parse_search("steps=200,learning_rate=0.1").steps
    200
    """
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    kwargs = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in fields:
            raise argparse.ArgumentTypeError(f"--search needs key=value pairs with keys from {sorted(fields)}, "
                                             f"got {item!r}")
        kwargs[key.strip()] = toml_value("--search", key, value)
    return SearchConfig(**kwargs)


def search_label(config: SearchConfig) -> str:
    """The fields of ``config`` that differ from the default search, or ``"default"``."""
    default = SearchConfig()
    changed = [f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(SearchConfig)
               if getattr(config, f.name) != getattr(default, f.name)]
    return ",".join(changed) or "default"


def slug(name: str) -> str:
    """A file name for a set of generators: ``"average, decay 0.999"`` -> ``"average-decay-0.999"``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


def train_variants(card, decays, data_dir, checkpoints=()) -> tuple[dict, dict]:
    """Train ``card``'s GANs, tracking generator weight averages: ``({name: ClassGAN}, train figures)``.

    ``checkpoints``: earlier epochs at which each average is also kept (one
    run then shows how the averages improve with training length).
    """
    averages: dict[float, ParameterAverage] = {}
    snapshots: dict[str, ParameterAverage] = {}
    training = card.training
    per_epoch = generator_steps_per_epoch(torch.empty(card.data["num_train"]), card.architecture["classes"],
                                          training["batch_size"], training["critic_steps"])
    at_step = {epoch * per_epoch: epoch for epoch in checkpoints}

    def track(gan, step):
        if not averages:
            averages.update({d: ParameterAverage(gan.generator, d) for d in decays})
        for average in averages.values():
            average.update(gan.generator)
        if step in at_step:
            for decay, average in averages.items():
                snapshots[f"average, decay {decay}, epoch {at_step[step]}"] = copy.deepcopy(average)

    result = train_class_gan(card, data_dir=data_dir, device="cpu", progress=line_progress(),
                             on_generator_step=track)
    variants = {"last weights": result.module}
    finals = {f"average, decay {decay}": average for decay, average in averages.items()}
    for name, average in {**snapshots, **finals}.items():
        gan = copy.deepcopy(result.module)
        average.copy_to(gan.generator)
        variants[name] = gan
    return variants, {"generator_steps": result.metrics["generator_steps"],
                      "train_seconds": round(result.metrics["seconds"], 1)}


def search_headroom(gan, images, labels, search, config: SearchConfig, ratio: float, restarts: int) -> dict:
    """How many of a search's errors a far stronger search removes: are they search or generator errors?

    The images whose two closest classes lie within a factor ``ratio`` of
    each other (where nearly all errors are) are searched again ``restarts``
    times with the library's refinement (:func:`refine_contested`, at
    SearchConfig's refine_* defaults: 20,000 draws, 300 steps, step size 0.1;
    other prior draws each time), and every (image, class) keeps the smallest
    distance any search found. Errors that survive are the generators' own:
    no search of their ranges brings the right class closer.
    """
    config = dataclasses.replace(config, refine_restarts=restarts, refine_ratio=ratio)
    contested = contested_images(search.distances, ratio)
    clock = time.perf_counter()
    refined = refine_contested(gan, images, search, config)
    before = int((search.labels[contested] != labels[contested]).sum())
    after = int((refined.labels[contested] != labels[contested]).sum())
    return {"ratio": ratio, "restarts": restarts, "contested_images": int(contested.sum()),
            "errors_among_contested": before, "errors_after_stronger_search": after,
            "errors_outside_contested": int((search.labels != labels).sum()) - before,
            "stronger_search": {k: v for k, v in vars(config.refinement(0)).items()
                                if k != "seed" and not k.startswith("refine_")},
            "seconds": round(time.perf_counter() - clock, 1)}


def load_variants(folder: Path, card) -> tuple[dict, dict]:
    """Generators kept by ``--save-dir`` for this very card (same recipe): ``({name: ClassGAN}, train figures)``."""
    variants, train_info = {}, {}
    for path in sorted(folder.glob("*.safetensors")):
        state, info = load_weights(path)
        if info.get("recipe_hash") != card.recipe_hash:
            raise SystemExit(f"{path} holds generators of recipe {info.get('recipe_hash')}, not this card's "
                             f"{card.recipe_hash}: pass the same --card, --set and --epochs as when it was saved")
        gan = build_class_gan(card)
        gan.load_state_dict(state)
        variants[info["name"]] = gan
        train_info = {"generator_steps": info["generator_steps"], "train_seconds": info["train_seconds"]}
    if not variants:
        raise SystemExit(f"no saved generators (*.safetensors) in {folder}")
    return variants, train_info


def main(argv=None) -> int:
    parser = cli(__file__, __doc__)
    parser.add_argument("--card", default="mnist-class-gan")
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--holdout", type=int, default=4000, help="last training digits held out for scoring")
    parser.add_argument("--decays", type=float, nargs="*", default=[0.99, 0.999])
    parser.add_argument("--set", type=parse_override, action="append", default=[], metavar="TABLE.KEY=VALUE",
                        help="override a card key (TOML value), e.g. architecture.generator_hidden='[512, 1024]'")
    parser.add_argument("--search", type=parse_search, action="append", default=[], metavar="KEY=VALUE,...",
                        help="a latent-search setting to score (repeatable), e.g. steps=200,learning_rate=0.1")
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[],
                        help="earlier epochs at which the averages are kept and scored too")
    parser.add_argument("--averages-only", action="store_true",
                        help="score only the weight averages, not the last weights")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="score only these sets of generators, e.g. 'average, decay 0.9999'")
    parser.add_argument("--save-dir", type=Path, default=None, help="keep the trained generators here")
    parser.add_argument("--load-dir", type=Path, default=None,
                        help="score generators kept by --save-dir (same card, --set, --epochs) instead of training")
    parser.add_argument("--headroom", type=int, default=0, metavar="RESTARTS",
                        help="search the contested images again this many times with a far stronger search")
    parser.add_argument("--headroom-ratio", type=float, default=1.1,
                        help="contested: the second-closest class within this factor of the closest")
    parser.add_argument("--threads", type=int, default=2)
    args = parse(parser, argv)
    torch.set_num_threads(args.threads)
    if not 0 < args.holdout < MNIST_TRAIN:
        parser.error(f"--holdout must lie in (0, {MNIST_TRAIN}), got {args.holdout}")
    if any(not 0 < epoch < args.epochs for epoch in args.checkpoints) or (args.checkpoints and not args.decays):
        parser.error(f"--checkpoints must lie in (0, --epochs = {args.epochs}) and need --decays")
    tables: dict[str, dict] = {"training": {"epochs": args.epochs, "generator_ema_decay": 0.0},
                               "data": {"num_train": MNIST_TRAIN - args.holdout}}
    for table, key, value in args.set:
        tables.setdefault(table, {})[key] = value
    card = load_card(args.card).with_overrides(**tables)
    overrides = [f"{t}.{k}={v}" for t, k, v in args.set]
    if args.load_dir is not None:
        variants, train_info = load_variants(args.load_dir, card)
    else:
        variants, train_info = train_variants(card, args.decays, args.data_dir, args.checkpoints)
        if args.save_dir is not None:
            for name, gan in variants.items():
                save_weights(args.save_dir / f"{slug(name)}.safetensors", gan.state_dict(),
                             {"name": name, "recipe_hash": card.recipe_hash, "overrides": overrides, **train_info})
    held = load_dataset("mnist", "train", data_dir=args.data_dir)
    images, labels = held.images[-args.holdout:], held.labels[-args.holdout:]
    if args.averages_only:
        variants = {name: gan for name, gan in variants.items() if name != "last weights"}
        if not variants:
            parser.error("--averages-only leaves nothing to score: give --decays")
    if args.only is not None:
        unknown = sorted(set(args.only) - set(variants))
        if unknown:
            parser.error(f"--only: no generators named {unknown}; there are {sorted(variants)}")
        variants = {name: variants[name] for name in args.only}
    configs = args.search or [SearchConfig()]
    rows, results = [], {}
    for name, gan in variants.items():
        results[name] = {}
        for config in configs:
            search = SynthesisClassifier(gan.eval(), config=config).search(images)
            errors = int((search.labels != labels).sum())
            figures = {"errors": errors, "accuracy_percent": round(100 * (1 - errors / len(labels)), 2),
                       "search_seconds": round(search.seconds, 1), "search": vars(config)}
            results[name][search_label(config)] = figures
            rows.append([name, search_label(config), errors, figures["accuracy_percent"], figures["search_seconds"]])
            print(f"{name}, {search_label(config)}: {errors} errors", flush=True)
            if args.headroom:
                figures["headroom"] = search_headroom(gan, images, labels, search, config, args.headroom_ratio,
                                                      args.headroom)
                print(f"  stronger search of the {figures['headroom']['contested_images']} contested images: "
                      f"{figures['headroom']['errors_among_contested']} errors there before, "
                      f"{figures['headroom']['errors_after_stronger_search']} after", flush=True)
    print(f"{' '.join([card.name, *overrides])}: {args.epochs} epochs on the first {MNIST_TRAIN - args.holdout} "
          f"training digits ({train_info['generator_steps']} generator steps, {train_info['train_seconds']:.0f} s); "
          f"scored on the last {args.holdout}")
    print_table(["generators", "search", "errors", "accuracy %", "search (s)"], rows)
    write_results(args, {
        "card": card.name, "overrides": overrides,
        "recipe_hash": card.recipe_hash, "epochs": args.epochs, "num_train": MNIST_TRAIN - args.holdout,
        "holdout": args.holdout, "threads": args.threads, **train_info, "results": results,
        "seed": None, "seed_note": "training and search use the card's own seeds",
        "columns": ["generators", "search", "errors", "accuracy_percent", "search_seconds"], "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
