"""The level-set calibration audit against known answers and against an independent reference (issue 24).

Each case runs :func:`ppl_audit.audits.calibration.evaluate` (SMC, ``q`` and its 95% interval from the
runs) and, in the same run, a reference that shares no code with SMC: importance sampling from the prior
(``--reference-draws`` draws, shared by every grid point), weighting each draw by the level set's
likelihood and averaging the world's class posterior. Where the answer is known in closed form it is
printed too.

Cases (``--cases``):

- ``bayes``: house/rocket latents shown as their own "images", and a classifier that computes the
  world's Bayes posterior: ``q = p``.
- ``temperature-2``: the same classifier with its logit divided by 2 (under-confident):
  ``q = sigmoid(2 logit p)``.
- ``three-class``: a class mixture of three overlapping 2-d Gaussians and its Bayes classifier with
  log-probabilities divided by 0.5 (over-confident), in confidence mode: where it says ``P(k) = c``, the
  truth is ``c^T / (c^T + 2 ((1 - c) / 2)^T)``, ``T = 0.5``.
- ``house-rocket-cnn``: the shipped CNN on the house/rocket world, as ``analyses/house-rocket-calibration.toml``
  (no closed form; the reference decides).

The z-scores divide the difference by the combined standard error (the runs' SE and the reference's MCSE).

``--run-sizes 125 250 500`` adds a second table: the three-class case at each smallest run size
(``particles_per_run``; 16 runs of it), over ``--seeds``, against its closed form.
The mean z-score shows the SMC bias of small runs, which the runs' own spread cannot show.

Run (from the repository root; the CNN case trains or loads ``house-rocket-cnn``):
      .venv/bin/python benchmarks/calibration_reference.py
      .venv/bin/python benchmarks/calibration_reference.py --cases --run-sizes 125 250 500 --seeds 0 1 2 \
          --name calibration_run_sizes
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from _common import parse, parser, print_table, set_threads, tests_module, write_results
from _reference import shared_prior_importance

from ppl_audit.audits import calibration
from ppl_audit.audits.calibration import CalibrationAuditSpec
from ppl_audit.levelset import LevelSet
from ppl_audit.priors import ClassMixturePrior, make_world

KNOWN = tests_module("labelled_world")  # the known-answer worlds are the tests' own

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
THREE_CLASS_GRID = (0.4, 0.6, 0.8, 0.95)
THREE_CLASS_TEMPERATURE = 0.5
# Its level sets are 2-d specks under the prior (concentration 1,000 over three classes): importance
# sampling needs ten times the draws for a useful reference, and its classifier is cheap.
THREE_CLASS_DRAWS_FACTOR = 10
RUN_SIZE_RUNS = 16  # the run-size table's runs per level set: only their size varies
QUICK = dict(particles=1000, reference_draws=20_000, grid=(0.3, 0.7))


@dataclass
class Case:
    """A world, a classifier, the audit's settings and the closed-form ``q`` (None where unknown)."""

    world: object
    classifier: object
    spec: CalibrationAuditSpec
    exact: Callable[[str, float], float] | None


def _sigmoid_of_scaled_logit(t: float) -> Callable[[str, float], float]:
    return lambda _cls, p: 1 / (1 + math.exp(-t * math.log(p / (1 - p))))


def _three_class_truth(_cls: str, p: float) -> float:
    c, rest = p ** THREE_CLASS_TEMPERATURE, 2 * ((1 - p) / 2) ** THREE_CLASS_TEMPERATURE
    return c / (c + rest)


def make_case(name: str, args) -> Case:
    settings = dict(concentration=1000.0, num_particles=args.particles, device="cpu")
    grid = tuple(args.grid)
    if name in ("bayes", "temperature-2"):
        world = KNOWN.LatentImageWorld()
        t = 1.0 if name == "bayes" else 2.0
        return Case(world, KNOWN.bayes_classifier(world, t),
                    CalibrationAuditSpec(pair=("rocket", "house"), grid=grid, **settings),
                    _sigmoid_of_scaled_logit(t))
    if name == "three-class":
        world = ClassMixturePrior(KNOWN.ShiftedGenerators(), ("a", "b", "c"), name="triangle")
        return Case(world, KNOWN.triangle_classifier(THREE_CLASS_TEMPERATURE),
                    CalibrationAuditSpec(mode="confidence", grid=tuple(args.three_class_grid), **settings),
                    _three_class_truth)
    from ppl_audit.audits.worlds import load_classifier

    world = make_world("house-rocket")
    return Case(world, load_classifier("house-rocket-cnn", device="cpu", cache=args.cache_dir),
                CalibrationAuditSpec(pair=("rocket", "house"), grid=grid, **settings), None)


def reference(case: Case, results, draws: int, seed: int) -> list[dict]:
    """Prior importance sampling of every grid point's ``q`` (the world's class posterior, averaged)."""
    world, names = case.world, tuple(case.classifier.class_names)
    sets, columns = [], []
    for pt in results.points:
        k = names.index(pt.class_name)
        target = (calibration.pair_target(pt.p, results.pair, len(names)) if results.pair else
                  calibration.confidence_target(pt.p, k, len(names)))
        sets.append(LevelSet(world, case.classifier, target, concentration=case.spec.concentration))
        columns.append(tuple(world.class_names).index(pt.class_name))
    index = torch.tensor(columns)

    def true_class(z, _probs):
        return world.class_posterior(z)[:, index].double()

    moments = shared_prior_importance(sets, true_class, draws, seed=seed, chunk_size=16_384)
    return [{"q": float(m["mean"][i]), "mcse": float(m["mcse"][i]), "ess": float(m["ess"])}
            for i, m in enumerate(moments)]


def _z(a: float, b: float, se: float) -> float | None:
    return None if not se > 0 else (a - b) / se


def case_rows(name: str, args, seed: int) -> list[dict]:
    case = make_case(name, args)
    start = time.perf_counter()
    results = calibration.evaluate(case.spec, seed=seed, world=case.world, classifier=case.classifier)
    smc_seconds = time.perf_counter() - start
    start = time.perf_counter()
    draws = args.reference_draws * (THREE_CLASS_DRAWS_FACTOR if name == "three-class" else 1)
    refs = reference(case, results, draws, seed + 10_000)
    ref_seconds = time.perf_counter() - start
    rows = []
    for pt, ref in zip(results.points, refs):
        se = statistics.stdev(pt.run_estimates) / math.sqrt(len(pt.run_estimates))
        exact = case.exact(pt.class_name, pt.p) if case.exact else None
        rows.append({
            "case": name, "class": pt.class_name, "p": pt.p, "q": pt.q, "q_se": se, "converged": pt.converged,
            "mean_prediction": pt.mean_prediction, "reference_q": ref["q"], "reference_mcse": ref["mcse"],
            "reference_ess": ref["ess"], "exact_q": exact,
            "z_vs_reference": _z(pt.q, ref["q"], math.hypot(se, ref["mcse"])),
            "z_vs_exact": None if exact is None else _z(pt.q, exact, se),
            "reference_z_vs_exact": None if exact is None else _z(ref["q"], exact, ref["mcse"]),
            "p_within_interval": pt.q_low <= pt.p <= pt.q_high,
            "smc_seconds_per_point": smc_seconds / len(results.points),
            "reference_seconds": ref_seconds})
    return rows


def run_size_rows(args) -> list[dict]:
    """The three-class case at each smallest run size, against its closed form, over the seeds."""
    rows = []
    for size in args.run_sizes:
        zs, start = [], time.perf_counter()
        for seed in args.seeds:
            case = make_case("three-class", args)
            spec = dataclasses.replace(case.spec, grid=tuple(args.run_size_grid), particles_per_run=size,
                                       num_particles=RUN_SIZE_RUNS * size)
            for pt in calibration.evaluate(spec, seed=seed, world=case.world, classifier=case.classifier).points:
                se = statistics.stdev(pt.run_estimates) / math.sqrt(len(pt.run_estimates))
                zs.append((pt.q - case.exact(pt.class_name, pt.p)) / se)
        rows.append({"particles_per_run": size, "runs": len(pt.run_estimates), "num_particles": spec.num_particles,
                     "points": len(zs), "mean_z": statistics.fmean(zs), "sd_z": statistics.stdev(zs),
                     "max_abs_z": max(map(abs, zs)), "seconds": time.perf_counter() - start})
    return rows


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=(0,))
    p.add_argument("--cases", nargs="*", default=["bayes", "temperature-2", "three-class", "house-rocket-cnn"],
                   choices=["bayes", "temperature-2", "three-class", "house-rocket-cnn"])
    p.add_argument("--particles", type=int, default=CalibrationAuditSpec.num_particles,
                   help="SMC particles per level set (default: the audit's)")
    p.add_argument("--reference-draws", type=int, default=400_000)
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    p.add_argument("--three-class-grid", type=float, nargs="+", default=list(THREE_CLASS_GRID))
    p.add_argument("--run-sizes", type=int, nargs="*", default=[],
                   help="smallest run sizes of the run-size table (none: no table)")
    p.add_argument("--run-size-grid", type=float, nargs="+", default=[0.8, 0.95])
    p.add_argument("--threads", type=int, default=None)
    args = parse(p, argv, quick=QUICK)
    set_threads(args.threads)
    if args.quick:
        args.three_class_grid, args.cases = [0.8], [c for c in args.cases if c != "house-rocket-cnn"]
    rows = []
    for seed in args.seeds:
        for name in args.cases:
            rows += case_rows(name, args, seed)
            print(f"{name} (seed {seed}) done", flush=True)
    print(f"\nCalibration on level sets: SMC's q against prior importance sampling "
          f"({args.reference_draws} draws) and the closed form, concentration 1000")
    print_table(["case", "class", "p", "q (SMC)", "SE", "reference q", "MCSE", "exact q", "z vs ref", "z vs exact",
                 "ref z vs exact", "mean pred"],
                [[r["case"], r["class"], r["p"], round(r["q"], 4), round(r["q_se"], 4), round(r["reference_q"], 4),
                  round(r["reference_mcse"], 4), "-" if r["exact_q"] is None else round(r["exact_q"], 4),
                  _fmt(r["z_vs_reference"]), _fmt(r["z_vs_exact"]), _fmt(r["reference_z_vs_exact"]),
                  round(r["mean_prediction"], 4)] for r in rows])
    sizes = run_size_rows(args)
    if sizes:
        print("\nThree-class world: q against its closed form, by the smallest SMC run")
        print_table(["particles per run", "runs", "particles", "points", "mean z", "sd z", "max |z|", "s"],
                    [[r["particles_per_run"], r["runs"], r["num_particles"], r["points"], round(r["mean_z"], 2),
                      round(r["sd_z"], 2), round(r["max_abs_z"], 2), round(r["seconds"], 1)] for r in sizes])
    write_results(args, {"seeds": args.seeds, "rows": rows, "run_sizes": sizes,
                         "settings": {"particles": args.particles, "reference_draws": args.reference_draws,
                                      "grid": args.grid, "three_class_grid": args.three_class_grid,
                                      "three_class_temperature": THREE_CLASS_TEMPERATURE}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
