"""What each SMC lever buys on the demo's eight level sets: convergence, honest ESS and time, in one run.

Configurations (all adaptively tempered SMC with the level-set plan's runs and fitted independent moves):

* ``latent-fixed-moves``: the sampler before issue 21: moves over ``z``, 4 moves a stage;
* ``normal-fixed-moves`` and ``normal-moved-0.9``: moves over ``u ~ N(0, I)`` with
  ``z = prior.from_normal(u)`` (a class coordinate, then quantiles);
* ``unconstrained-fixed-moves``, ``unconstrained-moved-0.9`` and ``unconstrained-moved-0.9-slow-0.8``: moves over
  ``v`` with ``z = biject_to(support)(v)``, the prior carried over with its Jacobian.

``moved-0.9``: each stage keeps moving until 90% of every run's particles have accepted a move (at most
30 moves); ``fixed-moves``: 4 moves a stage. ``slow-0.8`` (with the two above): a run whose
moves accepted under 15% over a stage keeps 80% of its ESS at the next reweighting instead of 50%.
Those six make one round of runs. Then:

* ``normal-elliptical-5``: 5 elliptical slice moves a stage over ``u ~ N(0, I)``;
* ``rw-covariance``: the random-walk moves scaled by each run's particle covariance, not its sds;
* ``default-rounds`` (the default): ``unconstrained-moved-0.9-slow-0.8``, then, while the checks fail,
  up to two more rounds that double the independent runs, each superchain pooling more runs.
* ``ordered-one-round`` and ``ordered-rounds``: ``unconstrained-moved-0.9-slow-0.8`` and the default with
  sampler option ``resampling = "ordered"`` (systematic resampling in a spatial order).
* ``waste-free-P{P}[-N{particles}][-one-round]``: waste-free SMC (Dau & Chopin 2022, sampler option
  ``chain_length = P``): each stage resamples ``M / P`` chain starts per run, moves each ``P - 1`` times and
  keeps every state. A stage then costs ``M (P - 1) / P`` evaluations per run instead of ``M`` per move
  (4-30 moves), so the same budget buys more particles: ``-N4000`` runs 4,000 particles (8 runs of 500)
  instead of the demo's 1,000, with 5 final moves instead of 20 (the same 20,000 final evaluations);
  ``-N16000`` 16,000 particles with 2 final moves (about the default first round's evaluations).

Columns: nested R-hat, the ESS from the spread of the independent runs' means (the honest one) and
per run, the sd of the runs' log evidence, the moves' acceptance at the posterior, whether the
level set passes every check, seconds and classifier evaluations. The demo's classifier card is
trained on first use (about 15 s).

Run (from the repository root):
      .venv/bin/python benchmarks/levelset_smc_levers.py                 # results/levelset_smc_levers.json
      .venv/bin/python benchmarks/levelset_smc_levers.py --seeds 0 1 2
      .venv/bin/python benchmarks/levelset_smc_levers.py --quick         # one target, the default config, 64 particles
      .venv/bin/python benchmarks/levelset_smc_levers.py --seeds 0 1 2 --configs default-rounds \
          --name levelset_smc_rounds                                   # the default at three seeds
"""

from __future__ import annotations

import time


from _common import missing_cards, parse, parser, print_table, skip, write_results

from ppl_audit.audits.levelset import LevelSetAuditSpec
from ppl_audit.audits.worlds import load_classifier, load_world
from ppl_audit.sampling import sample_level_set

ONE_ROUND = {"max_rounds": 1}  # the configurations measured before rounds existed
FIXED = {"min_moved_fraction": 0.0, "slow_ess_fraction": 0.5, **ONE_ROUND}  # 4 moves a stage, one tempering pace
CONFIGS = {
    "latent-fixed-moves": {"space": "latent", **FIXED},
    "normal-fixed-moves": {"space": "normal", **FIXED},
    "normal-moved-0.9": {"space": "normal", "slow_ess_fraction": 0.5, **ONE_ROUND},
    "unconstrained-fixed-moves": {"space": "unconstrained", **FIXED},
    "unconstrained-moved-0.9": {"slow_ess_fraction": 0.5, **ONE_ROUND},
    "unconstrained-moved-0.9-slow-0.8": dict(ONE_ROUND),
    "normal-elliptical-5": {"space": "normal", "move": "elliptical", "num_moves": 5, **ONE_ROUND},
    "rw-covariance": {"rw_covariance": True, **ONE_ROUND},
    "default-rounds": {},
    "ordered-one-round": {"resampling": "ordered", **ONE_ROUND},
    "ordered-rounds": {"resampling": "ordered"},
}
WASTE_FREE_FINAL_DRAWS = 5  # x 4,000 particles: the default's 20 final moves x 1,000
CONFIGS["waste-free-P5"] = {"chain_length": 5}  # the demo's 1,000 particles: 25 chains of 5 per run
for _p in (10, 25):
    CONFIGS[f"waste-free-P{_p}-N4000"] = {"chain_length": _p, "particles": 4000,
                                          "num_final_draws": WASTE_FREE_FINAL_DRAWS}
    CONFIGS[f"waste-free-P{_p}-N4000-one-round"] = {**CONFIGS[f"waste-free-P{_p}-N4000"], **ONE_ROUND}
# 16,000 particles (200 chains of 10 per run), 2 final moves: about the default's first round in evaluations
CONFIGS["waste-free-P10-N16000-one-round"] = {"chain_length": 10, "particles": 16000, "num_final_draws": 2,
                                              **ONE_ROUND}
QUICK = {"particles": 64, "configs": ("default-rounds",)}  # the default sampler alone: ~10 s on 2 cores


def main(argv=None) -> int:
    p = parser(__file__, __doc__)
    p.add_argument("--particles", type=int, default=None, help="particles (default: the demo's, 1,000)")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None,
                   help="configurations to run (default: all; a quick run: the default)")
    p.add_argument("--worlds", nargs="+", default=None, help="default: the demo's two worlds")
    p.add_argument("--targets", nargs="+", default=None, help="target names (default: the demo's eight)")
    args = parse(p, argv)
    spec = LevelSetAuditSpec()  # the demo's worlds, targets and particle count
    if args.quick and missing_cards(args, [spec.classifier]):
        return skip(args, f"the {spec.classifier} weights are not cached (ppl-audit demo trains them)")
    worlds = spec.worlds[:1] if args.quick else (args.worlds or spec.worlds)
    targets = spec.targets[2:3] if args.quick else [t for t in spec.targets if not args.targets or t.name in args.targets]
    names = args.configs or (QUICK["configs"] if args.quick else list(CONFIGS))
    configs = {name: CONFIGS[name] for name in names}
    particles = QUICK["particles"] if args.quick else (args.particles or spec.num_particles)
    classifier = load_classifier(spec.classifier, device="cpu", cache=args.cache_dir)
    rows = []
    for world in worlds:
        prior = load_world(world, device="cpu", cache=args.cache_dir)
        for target in targets:
            for seed in args.seeds:
                for config, options in configs.items():
                    options = dict(options)
                    # a configuration's own particle count (waste-free: more particles at a like budget)
                    n = particles if args.quick or args.particles else options.pop("particles", particles)
                    options.pop("particles", None)
                    start = time.perf_counter()
                    res = sample_level_set(prior, classifier, target.probabilities,
                                           concentration=target.concentration, num_particles=n, seed=seed,
                                           options=options, device="cpu")
                    m, d = res.metrics, res.diagnostics
                    rows.append([world, target.name, seed, config, round(m["nested_rhat_max"], 4),
                                 round(m["ess_bulk_min"], 1), round(d["ess_per_superchain_min"], 1),
                                 round(m["log_evidence_sd"], 3), round(m["final_acceptance"], 3), m["converged"],
                                 round(time.perf_counter() - start, 2), m["classifier_evaluations"]])
                    print("  ".join(map(str, rows[-1])), flush=True)
    print()
    print_table(COLUMNS, rows)
    for config in configs:
        mine = [r for r in rows if r[3] == config]
        print(f"{config}: {sum(r[9] for r in mine)} of {len(mine)} converged, "
              f"{sum(r[10] for r in mine):.1f} s in all")
    write_results(args, {"seeds": args.seeds, "particles": particles, "configs": configs, "columns": COLUMNS,
                         "rows": rows})
    return 0


COLUMNS = ["world", "target", "seed", "config", "nested_rhat_max", "ess", "ess_per_run", "log_evidence_sd",
           "final_acceptance", "converged", "seconds", "evaluations"]

if __name__ == "__main__":
    raise SystemExit(main())
