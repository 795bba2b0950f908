"""GWIN training variants on a 2-core CPU budget: what each buys on the rejected MNIST test digits.

Every variant is the shipped card ``models/mnist-gwin.toml`` with a few
``[training]`` keys changed; each is trained into the cache (or loaded from
it) and run through the audit's pipeline (``evaluate_gwin``: S = 10 draws,
R runs) against the same Bayesian LeNet-5. Rows: variant, tau, % rejected,
BNN and BNN+GWIN accuracy on the rejected subset, the paper's figure, and the
variant's training seconds. All variants are reported, not only the best:
they are compared on the MNIST test digits, which are also the table's, so
picking the best of them biases that table upwards by the selection.

Run (from the repository root; each new variant trains for ~6 minutes on 2 cores):
      .venv/bin/python experiments/gwin_variants.py --data-dir ../shared/data          # results/gwin_variants.json
      .venv/bin/python experiments/gwin_variants.py --data-dir ../shared/data --variants card lr5e-4
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch


from _common import line_progress, parse, parser as cli, print_table, write_results

from ppl_audit.audits.gwin import PAPER_TAUS, evaluate_gwin, summarise
from ppl_audit.cards import load_card
from ppl_audit.data import load_dataset
from ppl_audit.training import load_model

RESULTS_CARDS = Path(tempfile.gettempdir()) / "ppl-audit-variant-cards"  # BNN cards of variants (regenerated)
#: name -> [training] overrides of models/mnist-gwin.toml (classifier_epochs: of the BNN card)
VARIANTS = {
    "card": {},  # the shipped card, which draws half of each generator batch from the uncertain digits
    # every generator input drawn uniformly from the training digits, as the paper describes; the card's
    # first recipe (90d931cc60aa058b, without the key) trained this way: the "card" row of gwin_variants.json
    "uniform-inputs": {"uncertain_input_fraction": 0.0},
    "uncertain-half": {"uncertain_input_fraction": 0.5},
    "lr5e-4": {"learning_rate": 5e-4},
    "lr5e-4-uncertain-half": {"learning_rate": 5e-4, "uncertain_input_fraction": 0.5},
    "uncertain-half-3x": {"uncertain_input_fraction": 0.5, "generator_steps": 5400},
    # Against a weaker BNN (3 SVI epochs instead of 30): tests whether GWIN's small gains come from
    # our BNN rejecting only the hardest digits (the paper's BNN was at 98.0%, ours at 99.2%).
    "weak-bnn-uncertain-half": {"uncertain_input_fraction": 0.5, "classifier_epochs": 3},
    # Against a BNN stopped after 2 epochs, near the paper's reported 98.0% test accuracy: the
    # paper's operating point rather than its recipe (our 30-epoch BNN reaches 99.2%).
    "paper-accuracy-bnn-uncertain-half": {"uncertain_input_fraction": 0.5, "classifier_epochs": 2},
    # G's inputs shifted by up to 2 pixels: G re-maps the 1,459 uncertain training digits far better
    # than the test digits the BNN rejects (84% against 68% at tau = 0.7), so it may be memorising them.
    "uncertain-half-shift2": {"uncertain_input_fraction": 0.5, "augment_shift_pixels": 2},
    # More of each generator batch from the uncertain training digits: does the trend from 0 to 0.5 go on?
    "uncertain-three-quarters": {"uncertain_input_fraction": 0.75},
    # The weight of the BNN's loss on G's output (lambda_Loss, the paper's 10), and a third of the
    # training: chosen on held-out digits with gwin_holdout.py, not on the test set.
    "transformation-3": {"transformation_penalty": 3.0},
    "transformation-30": {"transformation_penalty": 30.0},
    "transformation-100": {"transformation_penalty": 100.0},
    "steps-600": {"generator_steps": 600},
    # Ten times the card's training (under 10% of the paper's 200,000 GPU iterations, ~1 hour here):
    # does GWIN's poor transfer to digits it has not seen shrink with the budget?
    "steps-18000": {"generator_steps": 18000},
}
CLASSIFIER_KEYS = {"classifier_epochs": "epochs"}  # variant keys that change the BNN card's [training]


def variant_cards(name: str, num_train: int | None = None):
    """``(bnn_card, gwin_card)`` of variant ``name``; with ``num_train`` both train on only the first training digits.

    A GWIN names its classifier by card, so a changed BNN card is written to a file the GWIN card points at.
    """
    overrides = {k: v for k, v in VARIANTS[name].items() if k not in CLASSIFIER_KEYS}
    bnn_overrides = {CLASSIFIER_KEYS[k]: v for k, v in VARIANTS[name].items() if k in CLASSIFIER_KEYS}
    data = {"num_train": num_train} if num_train is not None else {}
    bnn_card = load_card("mnist-bayesian-lenet5")
    if bnn_overrides or data:
        bnn_card = bnn_card.with_overrides(training=bnn_overrides, data=data)
        path = RESULTS_CARDS / f"{bnn_card.name}-{bnn_card.recipe_hash}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(bnn_card.to_toml())
        overrides["classifier"] = str(path)
    return bnn_card, load_card("mnist-gwin").with_overrides(training=overrides, data=data)


def variant_rows(name: str, images: torch.Tensor, labels: torch.Tensor, *, num_train: int | None = None,
                 cache_dir=None, data_dir=None, runs: int = 2, seed: int = 0) -> list[dict]:
    """Train (or load) variant ``name``'s BNN and GWIN, run the audit's pipeline on ``images``, one row per tau."""
    bnn_card, card = variant_cards(name, num_train=num_train)
    loading = dict(cache=cache_dir, data_dir=data_dir, device="cpu", progress=line_progress())
    classifier = load_model(bnn_card, **loading, kind="bayesian-lenet-classifier").model
    start = time.perf_counter()
    gwin = load_model(card, **loading, kind="gwin")
    load_seconds = time.perf_counter() - start
    result = evaluate_gwin(classifier, gwin.module.transform, images, labels, taus=PAPER_TAUS, runs=runs,
                           figure_tau=PAPER_TAUS[0], seed=seed)
    print(f"{name}: done ({gwin.metrics.get('seconds', float('nan')):.0f} s training)", flush=True)
    return [{"variant": name, "overrides": VARIANTS[name], "recipe_hash": gwin.card.recipe_hash,
             "bnn_recipe_hash": bnn_card.recipe_hash,
             "bnn_test_accuracy": classifier.trained.metrics.get("test_accuracy"),
             "training_seconds": gwin.metrics.get("seconds"), "load_seconds": round(load_seconds, 1), **row}
            for row in summarise(result)]


def main(argv=None) -> int:
    parser = cli(__file__, __doc__)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--runs", type=int, default=2)
    args = parse(parser, argv)
    test = load_dataset("mnist", "test", data_dir=args.data_dir)
    rows = [row for name in args.variants
            for row in variant_rows(name, test.images, test.labels, cache_dir=args.cache_dir, data_dir=args.data_dir,
                                    runs=args.runs, seed=args.seeds[0])]
    print(f"MNIST test, S = 10, R = {args.runs}, seed {args.seeds[0]}")
    print_table(["variant", "tau", "% rej", "BNN acc rej", "BNN+GWIN acc rej", "paper", "train s"],
                [[r["variant"], r["tau"], r["rejected_percent_mean"], r["bnn_accuracy_rejected_percent_mean"],
                  r["gwin_accuracy_rejected_percent_mean"], r["paper_gwin_accuracy_rejected_percent"],
                  r["training_seconds"]] for r in rows])
    write_results(args, {"seed": args.seeds[0], "runs": args.runs, "rows": rows,
                                     "torch_threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
