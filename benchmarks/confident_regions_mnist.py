"""Confidently-wrong and novel-class rates of the MNIST LeNet-5 for all ten digits, over seeds, against plain MC.

The region of digit k is ``P(k) >= 0.99`` under ``mnist-lenet5``. Its prior (``--audit``):

- ``confidently-wrong``: the mixture of the other nine digits' VAEs (``mnist-class-vae``), as
  ``analyses/mnist-confidently-wrong.toml`` (results ``results/confidently_wrong_mnist.json``);
- ``novel-class``: the notMNIST letter VAE (``notmnist-vae``), as ``analyses/mnist-novel-class.toml``
  (results ``results/novel_class_mnist.json``).

Each seed runs :func:`~ppl_audit.region_mass.sample_confident_region`; the table gives each seed's rate,
their mean and spread, the mean of the runs' standard errors, and seconds per estimate.

The reference is a different method: plain Monte Carlo from the same prior (``--reference-draws`` draws,
decoded and classified in the same run), whose hit count gives a rate with a binomial standard error. Its
z-score ``(mean SMC rate - reference) / combined SE`` is printed where the reference has at least
``MIN_REFERENCE_HITS`` hits; below that its rate is only a bound.

A second table compares move settings (``--move-settings``: random-walk moves, the default fitted-mixture
independent moves, and fewer moves per stage) on one digit (``--move-digit``), at equal particles:
rate, relative standard error, the spread of log-evidence over runs, seconds and evaluations, and variance x
evaluations and x seconds, the figures that say which setting buys precision more cheaply. ``--skip-rates``
runs that table alone.

Run (from the repository root; models cached by ``ppl-audit run analyses/mnist-confidently-wrong.toml`` and
``analyses/mnist-novel-class.toml``):
      .venv/bin/python benchmarks/confident_regions_mnist.py --data-dir DATA --seeds 0 1 2
      .venv/bin/python benchmarks/confident_regions_mnist.py --audit novel-class --data-dir DATA --seeds 0 1 2
      .venv/bin/python benchmarks/confident_regions_mnist.py --skip-rates --move-digit 3 \
          --move-settings fitted "fitted, moved 0.5" "fitted, 4 moves" --name confidently_wrong_moves
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch

from _common import missing_cards, parse, parser, print_table, quick_data_dir, set_threads, skip, write_results

from ppl_audit.audits.confidently_wrong import GENERATOR_KINDS, mixture_without
from ppl_audit.audits.worlds import load_classifier, load_world
from ppl_audit.region_mass import margin, sample_confident_region
from ppl_audit.training import load_model

PRIOR_CARDS = {"confidently-wrong": "mnist-class-vae", "novel-class": "notmnist-vae"}
RESULTS_NAMES = {"confidently-wrong": "confidently_wrong_mnist", "novel-class": "novel_class_mnist"}
CONFIDENCE = 0.99
MIN_REFERENCE_HITS = 10  # below this the binomial rate's error is too rough for a z-score
REFERENCE_CHUNK = 8192
QUICK = {"classes": ["7"], "seeds": [0], "particles": 256, "runs": 4, "reference_draws": 4096, "move_digit": None}


def reference_rate(prior, classifier, k: int, draws: int, seed: int) -> tuple[int, int]:
    """Plain Monte Carlo: hits of ``P(k) >= CONFIDENCE`` among ``draws`` prior draws."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    hits = done = 0
    with torch.no_grad():
        while done < draws:
            n = min(REFERENCE_CHUNK, draws - done)
            probs = classifier.probs(prior.decode(prior.sample(n, generator=generator)))
            hits += int((margin(probs, k) >= math.log(CONFIDENCE / (1 - CONFIDENCE))).sum())
            done += n
    return hits, done


def class_row(prior, classifier, k: int, name: str, seeds, args) -> dict:
    """One digit: its SMC rates per seed, their spread, and the Monte Carlo reference."""
    rates, ses, seconds, bounds = [], [], [], []
    for seed in seeds:
        r = sample_confident_region(prior, classifier, k, confidence=CONFIDENCE, num_particles=args.particles,
                                    num_runs=args.runs, seed=seed * 1000 + k)
        rates.append(r.rate if r.estimable else float("nan"))
        ses.append(r.rate_se)
        bounds.append(r.upper_bound)
        seconds.append(r.seconds)
    hits, draws = reference_rate(prior, classifier, k, args.reference_draws, seeds[0])
    ok = [x for x in rates if not math.isnan(x)]
    mean = statistics.fmean(ok) if ok else float("nan")
    ref = hits / draws if draws else float("nan")  # --reference-draws 0: no reference
    ref_se = math.sqrt(max(hits, 1)) / draws if draws else float("nan")
    se_of_mean = math.sqrt(sum(s * s for s in ses)) / len(ses)
    z = (mean - ref) / math.hypot(se_of_mean, ref_se) if hits >= MIN_REFERENCE_HITS and ok else None
    return {"class": name, "rates": rates, "mean_rate": mean,
            "seed_sd": statistics.stdev(ok) if len(ok) > 1 else None, "mean_run_se": statistics.fmean(ses),
            "upper_bounds": bounds, "seconds_per_estimate": statistics.fmean(seconds),
            "reference_hits": hits, "reference_draws": draws, "reference_rate": ref, "z_vs_reference": z}


MOVE_SETTINGS = {  # name: SMC options; "fitted" is the default (sampling.smc_plan's level-set settings)
    "rw": {"move": "rw"},
    "fitted": {},
    "fitted, moved 0.5": {"min_moved_fraction": 0.5},
    "fitted, 4 moves": {"min_moved_fraction": 0.0},
}


def move_rows(prior, classifier, k: int, args) -> list[dict]:
    """Move settings (``--move-settings``) on one digit, same particles and seeds: precision per cost."""
    rows = []
    for name in args.move_settings:
        for seed in args.seeds:
            start = time.perf_counter()
            r = sample_confident_region(prior, classifier, k, num_particles=args.particles, num_runs=args.runs,
                                        seed=seed * 1000 + k, **MOVE_SETTINGS[name])
            rel = r.rate_se / r.rate if r.rate > 0 else float("nan")
            seconds = time.perf_counter() - start
            rows.append({"move": name, "seed": seed, "rate": r.rate, "relative_se": rel,
                         "log_evidence_sd": r.checks["log_evidence_sd"], "evaluations": r.num_evaluations,
                         "seconds": seconds, "variance_x_evaluations": rel * rel * r.num_evaluations,
                         "variance_x_seconds": rel * rel * seconds})
    return rows


def _priors(args, names):
    """``prior_for(k)``: the other digits' mixture, or the one novel-class prior for every ``k``."""
    card, data_dir = PRIOR_CARDS[args.audit], quick_data_dir(args)
    if args.audit == "novel-class":
        prior = load_world(card, device="cpu", cache=args.cache_dir, data_dir=data_dir)
        return lambda k: prior
    generators = load_model(card, kind=GENERATOR_KINDS, cache=args.cache_dir, data_dir=data_dir, device="cpu").module
    return lambda k: mixture_without(generators, names, k, card)


def _rounded(x: float, digits: int):
    """``x`` rounded, or "-" where the rate was not estimable (its relative error is NaN)."""
    return "-" if math.isnan(x) else round(x, digits)


def _print_rates(args, rows) -> None:
    print(f"\n{args.audit} rates, P(k) >= {CONFIDENCE} under {PRIOR_CARDS[args.audit]} "
          f"({args.particles} particles in {args.runs} runs, seeds {args.seeds})")
    print_table(["k", "mean rate", "sd over seeds", "mean run SE", "reference", "ref hits", "z", "s/estimate"],
                [[r["class"], f"{r['mean_rate']:.2e}", f"{r['seed_sd']:.1e}" if r["seed_sd"] else "-",
                  f"{r['mean_run_se']:.1e}", f"{r['reference_rate']:.2e}", r["reference_hits"],
                  "-" if r["z_vs_reference"] is None else round(r["z_vs_reference"], 2),
                  round(r["seconds_per_estimate"], 1)] for r in rows])


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=(0, 1, 2))
    p.add_argument("--audit", choices=sorted(PRIOR_CARDS), default="confidently-wrong")
    p.add_argument("--classes", nargs="+", default=[str(d) for d in range(10)])
    p.add_argument("--particles", type=int, default=2048)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--reference-draws", type=int, default=400_000)
    p.add_argument("--move-digit", default="0", help="the digit of the moves table ('' to skip it)")
    p.add_argument("--move-settings", nargs="+", choices=sorted(MOVE_SETTINGS), default=["rw", "fitted"],
                   help="the moves table's rows")
    p.add_argument("--skip-rates", action="store_true", help="the moves table only")
    p.add_argument("--threads", type=int, default=None)
    args = parse(p, argv, quick=QUICK)
    set_threads(args.threads)
    if args.name == Path(__file__).stem:
        args.name = RESULTS_NAMES[args.audit]
    missing = missing_cards(args, ("mnist-lenet5", PRIOR_CARDS[args.audit]))
    if missing:
        return skip(args, f"models not cached: {', '.join(missing)} (ppl-audit run "
                          f"analyses/mnist-{args.audit}.toml builds them)")
    classifier = load_classifier("mnist-lenet5", device="cpu", cache=args.cache_dir, data_dir=quick_data_dir(args))
    names = tuple(classifier.class_names)
    prior_for = _priors(args, names)
    rows = []
    for name in [] if args.skip_rates else args.classes:
        prior = prior_for(name)
        rows.append(class_row(prior, classifier, names.index(name), name, args.seeds, args))
        r = rows[-1]
        print(f"{name}: rates {['%.2e' % x for x in r['rates']]} reference {r['reference_hits']}/"
              f"{r['reference_draws']} z {r['z_vs_reference']}", flush=True)
    _print_rates(args, rows)
    moves = []
    if args.move_digit:
        prior = prior_for(args.move_digit)
        moves = move_rows(prior, classifier, names.index(args.move_digit), args)
        print(f"\nMoves on digit {args.move_digit}")
        print_table(["move", "seed", "rate", "rel SE", "sd log Z", "evaluations", "s", "rel SE^2 x evals",
                     "rel SE^2 x s"],
                    [[m["move"], m["seed"], f"{m['rate']:.2e}", _rounded(m["relative_se"], 3),
                      round(m["log_evidence_sd"], 2), m["evaluations"], round(m["seconds"], 1),
                      _rounded(m["variance_x_evaluations"], 0), _rounded(m["variance_x_seconds"], 3)]
                     for m in moves])
    write_results(args, {"audit": args.audit, "seeds": args.seeds, "confidence": CONFIDENCE,
                         "particles": args.particles,
                         "runs": args.runs, "rows": rows, "moves": moves})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
