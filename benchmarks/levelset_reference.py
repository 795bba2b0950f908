"""Does the default level-set sampler agree with an independent reference? (issue 21, item 3)

For every benchmark case (``_reference.CASES``: the circle world at concentrations 10 and 1,000,
house/rocket at 10 and 1,000, MNIST VAE and GAN priors with the MNIST audit's ambiguous and 1-vs-7
targets at concentration 10) this computes a reference posterior by a different method at at least
``COST_RATIO`` (20) times the default method's classifier evaluations:

* importance sampling from the prior (``_reference.prior_importance``, chunked), with enough draws
  for an importance ESS of at least ``REFERENCE_ESS`` (10^4) and at least 20x the default's cost,
  wherever that takes at most ``--max-draws`` prior draws;
* otherwise (tight level sets) larger and more SMC runs: calls of ``sample_level_set`` with
  16 x 4,096 particles (16 independent runs of 4,096, against the default's 8 of 125), call after call
  until their evaluations reach 20x the default's (its MCSE comes from the 16+ runs' spread).

The reference (posterior means of every latent and every predicted class probability, their Monte
Carlo standard errors, log Z with its standard error, the seed, cost and method) is saved to
``benchmarks/results/levelset_reference.json`` and reused by later runs (``--recompute`` redoes it).
Then the default method, ``sample_level_set(..., method="smc")`` with default options and the
audit's particle count, runs on each seed. Its MCSE comes from the spread of its independent runs'
means (its superchains). The script prints every z-score ``(mean - reference) / sqrt(mcse^2 +
reference mcse^2)``, per seed and for the seeds' runs pooled, and the same for log Z.

Run (from the repository root; MNIST cases need the MNIST models cached or --data-dir):
      nice -n 19 .venv/bin/python benchmarks/levelset_reference.py --cases circle-c10 house-rocket-c10
      nice -n 19 .venv/bin/python benchmarks/levelset_reference.py --data-dir ../shared/data   # every case
      .venv/bin/python benchmarks/levelset_reference.py --quick        # seconds; writes nothing unless --out
Each run updates its cases' entries of results/levelset_reference.json and leaves the others.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch


from _common import RESULTS, parse, parser, print_table, stamp
from _reference import (CASES, IS_CHUNK, QUICK_CASES, PosteriorEstimate, load_case, prior_importance,
                        quantity_names, runs_summary, smc_runs, z_scores)

from ppl_audit.sampling import sample_level_set

SCHEMA_VERSION = 1
REFERENCE_SEED = 12345  # the reference's draws share no seed with the default method's runs (0, 1, 2)
COST_RATIO = 20  # the reference spends at least this many times the default method's evaluations (issue 21)
REFERENCE_ESS = 10_000  # importance ESS asked of a prior-IS reference (issue 21)
PILOT_DRAWS = 100_000  # prior draws that estimate the ESS per draw before the reference run
MAX_DRAWS = 8_000_000  # prior-IS beyond this (minutes at ~20,000 draws/s on 2 cores) gives way to SMC
SMC_REFERENCE_PARTICLES = 4096  # particles per run of the SMC reference: 32x the default's 125-256
SMC_REFERENCE_RUNS_PER_CALL = 16  # sample_level_set's most runs a call: its MCSE has 15 degrees of freedom
QUICK_SMC_REFERENCE_PARTICLES = 64  # --quick --max-draws 0: exercises the SMC reference's code path
QUICK_PILOT_DRAWS, QUICK_REFERENCE_ESS = 4096, 300  # --quick: a smoke test of the code path, not a reference
QUICK_PARTICLES = 128  # --quick: 8 runs of 16 particles with random-walk moves
PROGRESS_DRAWS = 1 << 20  # a progress line per ~million prior draws
Z_PASS = 3.0  # |z| within 3 MCSE: agreement (issue 21)
COLUMNS = ["case", "seed", "max_abs_z", "worst", "log_z", "log_z_ref", "z_log_z", "runs", "evaluations", "seconds",
           "converged"]


def default_runs(case, seeds, quick: bool) -> list[dict]:
    """The default method on each seed: its per-run means, the evaluations and seconds."""
    names = quantity_names(case.level_set())
    out = []
    for seed in seeds:
        start = time.perf_counter()
        res = sample_level_set(case.prior, case.classifier, list(case.target), concentration=case.concentration,
                               num_particles=QUICK_PARTICLES if quick else case.particles, seed=seed,
                               device=case.device)
        seconds = time.perf_counter() - start
        means, sds, log_z = smc_runs(res)
        out.append({"seed": seed, "run_means": means, "run_sds": sds, "log_z_runs": log_z, "names": names,
                    "evaluations": res.metrics["classifier_evaluations"], "seconds": seconds,
                    "converged": res.metrics["converged"], "nested_rhat_max": res.metrics["nested_rhat_max"]})
        print(f"  {case.name} default smc seed {seed}: {seconds:.1f} s, {out[-1]['evaluations']} evaluations, "
              f"{means.shape[0]} runs, converged {res.metrics['converged']}", file=sys.stderr, flush=True)
    return out


def estimate_of(runs: list[dict], method: str) -> PosteriorEstimate:
    """The estimate of one or more calls' runs together (pooled superchains)."""
    return runs_summary(torch.cat([r["run_means"] for r in runs]), torch.cat([r["run_sds"] for r in runs]),
                        [z for r in runs for z in r["log_z_runs"]], runs[0]["names"],
                        evaluations=sum(r["evaluations"] for r in runs), seconds=sum(r["seconds"] for r in runs),
                        method=method)


def _draws_progress(done: int, total: int) -> None:
    if done % PROGRESS_DRAWS < IS_CHUNK or done == total:
        print(f"    prior draws {done}/{total}", file=sys.stderr, flush=True)


def compute_reference(case, default_evaluations: float, *, max_draws: int, quick: bool) -> dict:
    """The reference of ``case``: prior IS where ``max_draws`` reach the ESS asked, larger SMC runs otherwise."""
    level_set = case.level_set()
    target_ess, ratio = (QUICK_REFERENCE_ESS, 0) if quick else (REFERENCE_ESS, COST_RATIO)
    pilot = prior_importance(level_set, QUICK_PILOT_DRAWS if quick else PILOT_DRAWS, seed=REFERENCE_SEED + 1,
                             device=case.device)
    ess_per_draw = pilot.ess / pilot.evaluations
    need = math.ceil(max(target_ess / ess_per_draw, ratio * default_evaluations))
    print(f"  {case.name} reference pilot: ESS {pilot.ess:.0f} of {pilot.evaluations} draws; prior IS needs "
          f"{need} draws (cap {max_draws})", file=sys.stderr, flush=True)
    if need <= max_draws:
        est = prior_importance(level_set, need, seed=REFERENCE_SEED, device=case.device, progress=_draws_progress)
        settings = {"draws": need, "pilot_ess_per_draw": ess_per_draw}
    else:
        # Larger SMC runs through the public entry point: sample_level_set splits N particles into at most
        # 16 runs, so N = 16 x 4,096 gives 16 independent runs of 4,096 a call.
        # Calls until the evaluations reach the ratio asked (at least one): a call's cost is known only after it.
        per_call = SMC_REFERENCE_RUNS_PER_CALL * (QUICK_SMC_REFERENCE_PARTICLES if quick else SMC_REFERENCE_PARTICLES)
        calls = []
        while not calls or sum(c["evaluations"] for c in calls) < ratio * default_evaluations:
            start = time.perf_counter()
            res = sample_level_set(case.prior, case.classifier, list(case.target), concentration=case.concentration,
                                   num_particles=per_call, seed=REFERENCE_SEED + len(calls), device=case.device)
            means, sds, log_z = smc_runs(res)
            calls.append({"run_means": means, "run_sds": sds, "log_z_runs": log_z,
                          "names": quantity_names(level_set), "evaluations": res.metrics["classifier_evaluations"],
                          "seconds": time.perf_counter() - start})
            done = sum(c["evaluations"] for c in calls) / default_evaluations
            print(f"    SMC reference call {len(calls)} ({means.shape[0]} runs of {per_call // means.shape[0]}): "
                  f"{calls[-1]['seconds']:.0f} s, {done:.1f}x the default's evaluations so far (asked {ratio}x)",
                  file=sys.stderr, flush=True)
        num_calls = len(calls)
        runs = sum(c["run_means"].shape[0] for c in calls)
        est = estimate_of(calls, f"smc-{runs}-runs-of-{per_call // calls[0]['run_means'].shape[0]}")
        settings = {"calls": num_calls, "particles_per_call": per_call, "runs": runs,
                    "pilot_ess_per_draw": ess_per_draw, "prior_is_draws_needed": need}
    out = est.to_json()
    out.update(seed=REFERENCE_SEED, cost_ratio=est.evaluations / default_evaluations, settings=settings,
               case=case.settings())
    return out


def load_results(path: Path) -> dict:
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("schema_version") == SCHEMA_VERSION:
            return data
    return {"schema_version": SCHEMA_VERSION, "benchmark": "levelset_reference", "cases": {}}


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=(0, 1, 2))
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None, help="default: every case")
    p.add_argument("--max-draws", type=int, default=MAX_DRAWS)
    p.add_argument("--recompute", action="store_true", help="recompute references already saved")
    p.add_argument("--device", default="cpu", help="where the level set is evaluated (cpu, cuda)")
    args = parse(p, argv)
    cases = list(QUICK_CASES) if args.quick else (args.cases or list(CASES))
    seeds = args.seeds[:1] if args.quick else args.seeds
    path = Path(args.out) if args.out else (None if args.quick else RESULTS / "levelset_reference.json")
    data = load_results(path) if path else {"schema_version": SCHEMA_VERSION, "cases": {}}
    rows = []
    for name in cases:
        case = load_case(name, data_dir=args.data_dir, cache_dir=args.cache_dir, device=args.device)
        with torch.no_grad():
            runs = default_runs(case, seeds, args.quick)
            default_evaluations = sum(r["evaluations"] for r in runs) / len(runs)
            saved = data["cases"].get(name, {}).get("reference")
            if saved is None or args.recompute or saved.get("case") != case.settings() or args.quick:
                saved = compute_reference(case, default_evaluations, max_draws=args.max_draws, quick=args.quick)
        ref = PosteriorEstimate.from_json(saved)
        print(f"{name}: reference {ref.method}, {ref.evaluations} evaluations ({saved['cost_ratio']:.0f}x the default "
              f"method's), ESS {ref.ess:.0f}, log Z {ref.log_z:.4f} +- {ref.log_z_se:.4f}, {ref.seconds:.0f} s")
        comparisons = []
        for label, group in [*((r["seed"], [r]) for r in runs), *((("pooled", runs),) if len(runs) > 1 else ())]:
            est = estimate_of(group, "smc-default")
            z = z_scores(est, ref)
            worst = max(z["quantities"], key=lambda q: abs(z["quantities"][q]))
            rows.append([name, label, round(z["max_abs"], 2), worst, round(est.log_z, 4), round(ref.log_z, 4),
                         round(z["log_z"], 2), len(group) * group[0]["run_means"].shape[0],
                         sum(r["evaluations"] for r in group), round(sum(r["seconds"] for r in group), 1),
                         all(r["converged"] for r in group)])
            print(f"  seed {label}: z " + " ".join(f"{q}={v:+.2f}" for q, v in z["quantities"].items())
                  + f"; log Z {est.log_z:.4f} +- {est.log_z_se:.4f} (z {z['log_z']:+.2f})")
            comparisons.append({"seed": label, "estimate": est.to_json(), "z": z})
        data["cases"][name] = {"reference": saved, "default": {
            "method": "smc", "options": {}, "particles": QUICK_PARTICLES if args.quick else case.particles,
            "seeds": seeds, "comparisons": comparisons,
            "nested_rhat_max": [r["nested_rhat_max"] for r in runs]}}
    print()
    print_table(COLUMNS, rows)
    bad = [r for r in rows if r[2] > Z_PASS or abs(r[6]) > Z_PASS]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} comparisons within {Z_PASS:g} MCSE (means and log Z)")
    if path:
        data.update(**stamp(args), reference_seed=REFERENCE_SEED, seeds=seeds, cost_ratio_min=COST_RATIO,
                    reference_ess_asked=REFERENCE_ESS, columns=COLUMNS,
                    rows=[r for r in data.get("rows", []) if r[0] not in cases] + rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
