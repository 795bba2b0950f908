"""Reproduce the level-set paper's house/rocket figures (Booth et al. 2020, Sec. 4.1).

For each target and seed: Delta (Eq. 5), mean and minimum confidence, share
of samples in the 45-55% band, distinct samples, and ambiguous images per
1,000 classifier evaluations against drawing from the prior. A long
importance-sampling run from the prior gives the reference posterior mean of
the ambiguous target at concentration 10.

Run:  python benchmarks/levelset_house_rocket.py [--seeds 0 1 2] [--quick]
Writes benchmarks/results/levelset_house_rocket.json (a --quick run: two targets, tiny sizes, written only
with --out).
"""

from __future__ import annotations

import time

import torch

import ppl_audit as pa
from ppl_audit.levelset import LevelSet
from ppl_audit.metrics import AMBIGUOUS_BAND, fraction_in_band
from ppl_audit.training import load_model

from _common import missing_cards, parse, parser, print_table, skip, write_results

TARGETS = [  # (name, target over [rocket, house], concentration)
    ("house", (0.001, 0.999), 10.0),  # the paper's concentration: minimum confidence near 0.84
    ("house", (0.001, 0.999), 20.0),  # the audit's default for confident targets
    ("rocket", (0.999, 0.001), 10.0),
    ("rocket", (0.999, 0.001), 20.0),
    ("ambiguous", (0.5, 0.5), 10.0),
    ("ambiguous-tight", (0.5, 0.5), 1000.0),
]
REFERENCE_DRAWS = 400_000  # prior draws of the importance-sampling reference
PRIOR_YIELD_DRAWS = 100_000  # prior draws for the baseline ambiguous yield
QUICK = {"targets": 2, "reference_draws": 4_000, "prior_yield_draws": 2_000, "particles": 50, "steps": 10}


def _reference(world, clf, draws: int, yield_draws: int) -> tuple[float, dict]:
    """The prior's ambiguous yield per 1,000 evaluations, and the importance-sampling reference at c = 10."""
    gen = torch.Generator().manual_seed(12345)
    z = world.sample(draws, generator=gen)
    probs = LevelSet(world, clf, [0.5, 0.5]).predict(z)
    prior_yield = 1000.0 * fraction_in_band(probs[:yield_draws, 1])
    w = torch.softmax(LevelSet(world, clf, [0.5, 0.5], 10.0).log_likelihood(probs), 0)
    return prior_yield, {"ambiguous_c10_mean_p_rocket": float((w * probs[:, 0]).sum()),
                         "ess": float(1 / (w**2).sum()), "draws": draws}


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=(0, 1, 2))
    p.add_argument("--particles", type=int, default=1000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--world", default="house-rocket")
    args = parse(p, argv)
    targets, draws, yield_draws = TARGETS, REFERENCE_DRAWS, PRIOR_YIELD_DRAWS
    if args.quick:
        if missing_cards(args, ["house-rocket-cnn"]):
            return skip(args, "the house-rocket-cnn weights are not cached (ppl-audit demo trains them)")
        targets, draws, yield_draws = TARGETS[:QUICK["targets"]], QUICK["reference_draws"], QUICK["prior_yield_draws"]
        args.seeds, args.particles, args.steps = args.seeds[:1], QUICK["particles"], QUICK["steps"]

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    clf = load_model("house-rocket-cnn", cache=args.cache_dir, device="cpu", kind="house-rocket-classifier").model
    world = pa.make_world(args.world)
    prior_yield, reference = _reference(world, clf, draws, yield_draws)
    rows = []
    for name, target, alpha in targets:
        for seed in args.seeds:
            start = time.perf_counter()
            res = pa.sample_level_set(world, clf, target, concentration=alpha, num_particles=args.particles,
                                      num_steps=args.steps, seed=seed, device="cpu")
            m = res.metrics
            rows.append([name, alpha, seed, m["delta"], m["mean_confidence"], m["min_confidence"],
                         m["fraction_in_ambiguous_band"], m["num_distinct"], m["acceptance_rate"], m["rhat_max"],
                         m["ambiguous_per_1000_evaluations"], m["ambiguous_per_1000_evaluations"] / prior_yield,
                         time.perf_counter() - start])
    columns = ["target", "concentration", "seed", "delta", "mean_confidence", "min_confidence",
               "fraction_in_band", "num_distinct", "acceptance_rate", "rhat_max",
               "ambiguous_per_1000_evaluations", "yield_vs_prior", "seconds"]
    print(f"world {args.world}; N={args.particles} particles, T={args.steps} steps; "
          f"classifier test accuracy {clf.info['metrics']['test_accuracy']:.4f}")
    print_table(columns, rows)
    print(f"prior: {prior_yield:.2f} ambiguous (P(house) in {AMBIGUOUS_BAND}) per 1,000 evaluations")
    print(f"importance-sampling reference ({draws:,} prior draws, ESS {reference['ess']:.0f}): "
          f"ambiguous c=10 mean P(rocket) = {reference['ambiguous_c10_mean_p_rocket']:.4f}")
    write_results(args, {
        "benchmark": "levelset_house_rocket",
        "settings": {"particles": args.particles, "steps": args.steps, "world": args.world},
        "classifier": {"card": clf.info["card"], "recipe_hash": clf.info["recipe_hash"],
                       "test_accuracy": clf.info["metrics"]["test_accuracy"]},
        "prior_ambiguous_per_1000_evaluations": prior_yield,
        "reference": reference,
        "columns": columns,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
