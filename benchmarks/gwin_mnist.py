"""Reproduce the GWIN paper's MNIST table (Cosentino & Zhu 2019) with the audit's pipeline.

Runs ``analyses/mnist-gwin.toml`` (the Bayesian LeNet-5 and the GWIN are
loaded from the cache, or trained first) and prints, for every tau, the
paper's columns as mean +- std over R runs beside the paper's BNN+GWIN
accuracy on the rejected subset, plus the models' training figures (BNN test
accuracy, seconds per SVI epoch; GWIN generator iterations and seconds). The
pipeline's seconds exclude model loading and training.

Run (from the repository root):
      .venv/bin/python benchmarks/gwin_mnist.py --data-dir ../shared/data            # results/gwin_mnist.json
      .venv/bin/python benchmarks/gwin_mnist.py --data-dir ../shared/data --runs 2 --name gwin_mnist_r2
      .venv/bin/python benchmarks/gwin_mnist.py --quick   # R = 1, 2 draws, 100 digits; skipped without cached models
Exits with status 2 when the models are missing and cannot be trained (no data folder).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path



from _common import missing_cards, parse, parser, print_table, quick_data_dir, set_threads, skip, write_results

from ppl_audit.audits import gwin as gwin_audit
from ppl_audit.audits import load_audit_file
from ppl_audit.errors import PplAuditError
from ppl_audit.training import load_model

AUDIT_FILE = Path(__file__).resolve().parents[1] / "analyses" / "mnist-gwin.toml"
COLUMNS = ("rejected_percent", "bnn_accuracy_rejected_percent", "gwin_accuracy_rejected_percent",
           "accuracy_difference_points", "overall_accuracy_change_points", "error_change_percent")
QUICK = {"runs": 1, "num_samples": 2, "num_images": 100}  # the pipeline once, on the tests' 100 digits


def _pm(row, key) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    return "n/a" if mean is None else f"{mean:.2f} ± {std:.2f}"


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=())
    p.add_argument("--runs", type=int, default=None, help="R (default: the audit file's, 10)")
    p.add_argument("--threads", type=int, default=None)
    args = parse(p, argv)
    set_threads(args.threads)
    _, spec, seed = load_audit_file(AUDIT_FILE)
    if args.runs is not None:
        spec = dataclasses.replace(spec, runs=args.runs)
    seed = args.seeds[0] if args.seeds else seed  # default: the audit file's
    if args.quick:
        missing = missing_cards(args, [spec.classifier, spec.gwin])
        if missing:
            return skip(args, f"the weights of {', '.join(missing)} are not cached (a quick run trains nothing)")
        spec = dataclasses.replace(spec, **QUICK)
    args.data_dir = quick_data_dir(args)
    try:

        classifier = load_model(spec.classifier, cache=args.cache_dir, data_dir=args.data_dir, device="cpu",
                                kind="bayesian-lenet-classifier").model
        gwin = load_model(spec.gwin, cache=args.cache_dir, data_dir=args.data_dir, device="cpu", kind="gwin")
    except PplAuditError as exc:
        print(f"gwin_mnist: error: the models are missing and cannot be trained: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    report = gwin_audit.run(dataclasses.replace(spec, device="cpu"), seed=seed, data_dir=args.data_dir,
                            classifier=classifier, gwin=gwin)
    seconds = time.perf_counter() - start
    rows = report.metrics["taus"]
    bnn, gen = classifier.trained.metrics, gwin.metrics
    print(f"MNIST test, {report.metrics['num_images']} images, S = {spec.num_samples}, R = {spec.runs}, seed {seed}; "
          f"BNN accuracy {report.metrics['bnn_accuracy_percent']:.2f}% (paper 98.0%)")
    print_table(["tau", "% rejected", "BNN acc rej", "BNN+GWIN acc rej", "diff", "overall change", "% error change",
                 "paper BNN+GWIN", ">= paper"],
                [[r["tau"], *[_pm(r, k) for k in COLUMNS], r["paper_gwin_accuracy_rejected_percent"],
                  r["at_or_above_paper"]] for r in rows])
    print(f"BNN: test accuracy {bnn.get('test_accuracy')}, {bnn.get('seconds_per_epoch')} s per SVI epoch, "
          f"{bnn.get('seconds')} s training; GWIN: {gen.get('generator_steps')} generator iterations, "
          f"{gen.get('seconds')} s training, confident set {gen.get('confident_set_size')}; pipeline {seconds:.1f} s")
    write_results(args, {
        "seed": seed, "spec": dataclasses.asdict(spec), "rows": rows,
        "bnn_accuracy_percent": report.metrics["bnn_accuracy_percent"],
        "at_or_above_paper_count": report.metrics["at_or_above_paper_count"],
        "paper_comparisons": report.metrics["paper_comparisons"],
        "bnn_training": {k: v for k, v in bnn.items() if not isinstance(v, (list, dict))},
        "bnn_recipe_hash": classifier.trained.card.recipe_hash,
        "gwin_training": {k: v for k, v in gen.items() if not isinstance(v, (list, dict))},
        "gwin_recipe_hash": gwin.card.recipe_hash,
        "pipeline_seconds": round(seconds, 2),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
