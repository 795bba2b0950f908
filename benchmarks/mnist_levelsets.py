"""Reproduce the level-set paper's MNIST Table 1 (Booth et al. 2020, Sec. 4.2) with the audit's sampler.

For each prior (VAE, GAN), target (ambiguous, 1-vs-7, 8-vs-9), concentration
and seed: Delta (Eq. 5) beside the paper's value, distinct samples among
those kept, the convergence diagnostics (nested R-hat over the independent
SMC runs, bulk ESS, the verdict), SMC stages, classifier evaluations and
seconds per target, with each cell's SMC rounds, the ESS of its superchains
(its runs, counted as independent), log-evidence spread, guarded stages (the plateau guard's) and its
share of the raw evaluation rate (prior draws decoded and classified per
second, measured in the same run before and after the cells). Models are
loaded (trained into the cache on first use) before any timing starts, so the
seconds are those of sampling alone. ``--targets`` picks targets by name.
Particles, kept samples and method are the audit file's
(``analyses/mnist-levelsets.toml``); so is each target's concentration, unless
``--concentration`` lists others to run every target at; ``--options`` passes sampler options (JSON)
to every cell, to compare a lever on the same seeds.

Run (from benchmarks/):
      ../.venv/bin/python mnist_levelsets.py --data-dir ../../shared/data             # results/mnist_levelsets.json
      ../.venv/bin/python mnist_levelsets.py --data-dir ../../shared/data --threads 1 --name mnist_levelsets_1thread
      ../.venv/bin/python mnist_levelsets.py --data-dir ../../shared/data --seeds 0 \\
          --concentration 10 100 1000 3000 --threads 1 --name mnist_levelsets_concentration
      ../.venv/bin/python mnist_levelsets.py --data-dir ../../shared/data --priors mnist-vae \\
          --concentration 1000 --threads 1 --name mnist_levelsets_vae_c1000
      ../.venv/bin/python mnist_levelsets.py --quick    # one prior, one target, 64 particles; writes only with --out
Writes benchmarks/results/NAME.json (default mnist_levelsets). Exits with status 2
when the MNIST models are missing and cannot be trained (no data folder); a --quick run skips instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from ppl_audit.audits import levelset, load_audit_file
from ppl_audit.audits import worlds as registry
from ppl_audit.errors import PplAuditError
from ppl_audit.sampling import sample_level_set

from _common import missing_cards, parse, parser, print_table, raw_rate, set_threads, skip, write_results

AUDIT_FILE = Path(__file__).resolve().parents[1] / "analyses" / "mnist-levelsets.toml"
SECONDS_GOAL = 20.0  # issue 21: one converged MNIST target in at most 20 s on 2 cores, models cached
DISTINCT_GOAL = 0.5  # distinct samples at least this share of those kept
QUICK = {"particles": 64, "samples": 16, "concentration": 10.0}  # one prior, target and seed: seconds


def _load_models(args, spec, worlds):
    """The classifier and the priors of ``worlds``, or exit 2 saying why they cannot be had."""
    try:
        start = time.perf_counter()
        clf = registry.load_classifier(spec.classifier, device="cpu", cache=args.cache_dir, data_dir=args.data_dir)
        priors = {w: registry.load_world(w, device="cpu", cache=args.cache_dir, data_dir=args.data_dir)
                  for w in worlds}
        return clf, priors, time.perf_counter() - start
    except ImportError as exc:
        reason = f"the MNIST models are not part of this checkout yet ({exc})"
    except PplAuditError as exc:
        reason = f"the MNIST models are missing from the cache and cannot be trained: {exc}"
    print(f"mnist_levelsets: error: {reason}", file=sys.stderr)
    sys.exit(2)


def _fmt_cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f}" + (f" +- {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def _chosen_targets(targets, names: list[str]) -> tuple:
    """The audit file's ``targets`` named in ``names``, in the file's order; exit 2 naming any unknown name."""
    known = {t.name for t in targets}
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"mnist_levelsets: error: unknown target {', '.join(unknown)} (the audit file has "
              f"{', '.join(t.name for t in targets)})", file=sys.stderr)
        sys.exit(2)
    return tuple(t for t in targets if t.name in names)


def _max_info(info: dict, key: str):
    """The largest per-run value of an SMC result's ``info[key]`` (``None`` when it has none)."""
    value = info.get(key)
    if value is None:
        return None
    return int(torch.as_tensor(value).max())


def _label(concentration: float | None) -> str:
    """A concentration as the tables name it: each target's own is "audit"."""
    return "audit" if concentration is None else f"{concentration:g}"


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=(0, 1, 2))
    p.add_argument("--concentration", type=float, nargs="+", default=None,
                   help="run every target at each of these (default: each target's own, the audit's)")
    p.add_argument("--particles", type=int, default=None, help="default: the audit file's")
    p.add_argument("--samples", type=int, default=None, help="default: the audit file's")
    p.add_argument("--priors", nargs="+", default=None, help="default: the audit file's (mnist-vae mnist-gan)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--targets", nargs="+", default=None,
                   help="target names of the audit file to run (default: all: ambiguous 1-vs-7 8-vs-9)")
    p.add_argument("--options", type=json.loads, default=None,
                   help='sampler options as JSON, e.g. \'{"resampling": "systematic"}\' (default: the sampler\'s own)')
    args = parse(p, argv)

    set_threads(args.threads)
    torch.set_grad_enabled(False)
    _, spec, _ = load_audit_file(AUDIT_FILE)
    if args.targets:
        spec = dataclasses.replace(spec, targets=_chosen_targets(spec.targets, args.targets))
    if args.quick:
        args.seeds, args.particles, args.samples = args.seeds[:1], QUICK["particles"], QUICK["samples"]
        args.concentration = args.concentration or [QUICK["concentration"]]  # the paper's: few SMC stages
        args.priors = (args.priors or list(spec.worlds))[:1]
        spec = dataclasses.replace(spec, targets=spec.targets[:1])
        missing = missing_cards(args, [spec.classifier, *args.priors])
        if missing:
            return skip(args, f"the weights of {', '.join(missing)} are not cached (a quick run trains nothing)")
    particles = args.particles or spec.num_particles
    samples = min(args.samples or spec.num_samples, particles)
    worlds = tuple(args.priors or spec.worlds)
    clf, priors, load_seconds = _load_models(args, spec, worlds)
    concentrations = args.concentration or [None]  # None: each target's own
    load_average_start = os.getloadavg()  # other work on the machine slows the timings
    raw_before = {w: raw_rate(priors[w], clf) for w in worlds}  # and the same work twice, before and after
    t0 = time.perf_counter()
    rows = []
    for world in worlds:
        for target in spec.targets:
            for c in concentrations:
                for seed in args.seeds:
                    start = time.perf_counter()
                    res = sample_level_set(priors[world], clf, target.probabilities,
                                           concentration=target.concentration if c is None else c,
                                           method=spec.method, num_particles=particles, num_samples=samples,
                                           seed=seed, device="cpu", options=args.options)
                    seconds = time.perf_counter() - start
                    m = res.metrics
                    share_of_raw = m["classifier_evaluations"] / seconds / raw_before[world]
                    paper = levelset.paper_delta(world, target)
                    rows.append([registry.PAPER_ROWS.get(world, world), target.name,
                                 target.concentration if c is None else c, seed,
                                 round(100 * m["delta"], 3), None if paper is None else round(100 * paper, 2),
                                 None if paper is None else m["delta"] <= paper, m["num_distinct"],
                                 m["num_samples"], m["nested_rhat_max"], m["ess_bulk_min"], m["converged"],
                                 res.chain.info.get("num_stages"), m["classifier_evaluations"], seconds,
                                 m.get("ess_superchains_min"), m.get("smc_rounds"), m.get("smc_discarded_rounds"),
                                 m.get("log_evidence_sd"), _max_info(res.chain.info, "guarded_stages"),
                                 share_of_raw])
                    print(f"  {world} {target.name} c={_label(c)} seed={seed}: Delta {100 * m['delta']:.2f}% "
                          f"distinct {m['num_distinct']}/{m['num_samples']}, nested R-hat {m['nested_rhat_max']:.3f} "
                          f"({'converged' if m['converged'] else 'not converged'}), {seconds:.1f} s", file=sys.stderr)
    columns = ["prior", "target", "concentration", "seed", "delta_percent", "paper_delta_percent",
               "at_or_below_paper", "num_distinct", "num_samples", "nested_rhat_max", "ess_bulk_min", "converged",
               "smc_stages", "classifier_evaluations", "seconds", "ess_superchains_min", "smc_rounds",
               "smc_discarded_rounds", "log_evidence_sd", "guarded_stages_max", "share_of_raw_rate"]
    raw_after = {w: raw_rate(priors[w], clf) for w in worlds}
    accuracy = ((getattr(clf, "info", None) or {}).get("metrics") or {}).get("test_accuracy")
    print(f"MNIST level sets: {', '.join(worlds)} x {[t.name for t in spec.targets]}; method {spec.method}, "
          f"N={particles} particles, n={samples} kept, seeds {args.seeds}; torch threads {torch.get_num_threads()}; "
          f"classifier test accuracy {accuracy}")
    for w in worlds:
        print(f"raw rate {w}: {raw_before[w]:,.0f} evaluations/s before the cells, {raw_after[w]:,.0f} after "
              "(share_of_raw_rate: a cell's evaluations per second over the rate before)")
    print_table(columns, rows)

    # The paper's Table 1 layout: rows priors, columns targets; ours as mean +- sd over seeds.
    table1 = []
    for c in concentrations:
        print(f"\nDelta (%), concentration {_label(c)} (ours: mean +- sd over seeds; paper: concentration "
              f"{levelset.PAPER_CONCENTRATION:g})")
        t_cols = ["prior"] + [f"{t.name} ours / paper" for t in spec.targets]
        t_rows = []
        for world in worlds:
            label = registry.PAPER_ROWS.get(world, world)
            row = [label]
            for target in spec.targets:
                vals = [r[4] for r in rows if r[0] == label and r[1] == target.name and c in (None, r[2])]
                paper = levelset.paper_delta(world, target)
                row.append(f"{_fmt_cell(vals)} / {'-' if paper is None else f'{100 * paper:.2f}'}")
                table1.append({"prior": label, "target": target.name,
                               "concentration": target.concentration if c is None else c,
                               "delta_percent_mean": statistics.fmean(vals), "delta_percent_max": max(vals),
                               "paper_delta_percent": None if paper is None else 100 * paper})
            t_rows.append(row)
        print_table(t_cols, t_rows)

    goals = {}
    for c in concentrations:
        cell_rows = [r for r in rows if c in (None, r[2])]
        goals[_label(c)] = {
            "delta_at_or_below_paper_every_cell_and_seed": all(r[6] for r in cell_rows if r[6] is not None),
            "distinct_at_least_half_of_kept": all(r[7] >= DISTINCT_GOAL * r[8] for r in cell_rows),
            "min_distinct_fraction": min(r[7] / r[8] for r in cell_rows),
            "all_converged": all(r[11] for r in cell_rows),
            "seconds_per_target_max": max(r[14] for r in cell_rows),
            "seconds_per_target_mean": statistics.fmean(r[14] for r in cell_rows),
            "seconds_goal": SECONDS_GOAL,
            "seconds_goal_met": max(r[14] for r in cell_rows) <= SECONDS_GOAL,
        }
        g = goals[_label(c)]
        print(f"\nconcentration {_label(c)}: Delta <= paper in every cell and seed: "
              f"{g['delta_at_or_below_paper_every_cell_and_seed']}; distinct >= {DISTINCT_GOAL:.0%} of kept: "
              f"{g['distinct_at_least_half_of_kept']} (min {g['min_distinct_fraction']:.0%}); converged: "
              f"{g['all_converged']}; seconds per target mean {g['seconds_per_target_mean']:.1f}, max "
              f"{g['seconds_per_target_max']:.1f} (goal <= {SECONDS_GOAL:g})")
    models = {"classifier": (getattr(clf, "info", None) or {}).get("recipe_hash"),
              **{w: (getattr(priors[w], "info", None) or {}).get("recipe_hash") for w in worlds}}
    write_results(args, {
        "benchmark": "mnist_levelsets",
        "settings": {"options": args.options, "concentration": args.concentration, "threads": args.threads, "particles": particles,
                     "samples": samples, "method": spec.method, "priors": list(worlds),
                     "audit_file": str(AUDIT_FILE.name),
                     "targets": {t.name: list(t.probabilities) for t in spec.targets}},
        "seeds": args.seeds,
        "model_recipe_hashes": models,
        "load_seconds": load_seconds,
        "raw_evaluations_per_second": {w: [round(raw_before[w]), round(raw_after[w])] for w in worlds},
        "load_average": {"start": list(load_average_start), "end": list(os.getloadavg())},
        "columns": columns,
        "rows": rows,
        "table_1": table1,
        "goals": goals,
        "seconds": time.perf_counter() - t0,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
