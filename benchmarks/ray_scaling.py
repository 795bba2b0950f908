"""Scale-out on Ray: the demo audit, a 16-target MNIST level-set audit and one large target split into SMC
run groups, local against Ray, in one run.

Run:  python benchmarks/ray_scaling.py [--quick] [--cases demo mnist16 groups]
Each case's level sets run four ways, one after another: ``local`` (this process, torch's default threads:
the speed baseline), ``local-1t`` (this process on one torch thread), ``ray-1`` (a local Ray instance with 1
CPU: one worker at a time) and ``ray-2`` (2 CPUs: two workers of one CPU each). The Ray rows run with one
driver thread, because a unit runs with the driver's thread count and reserves that many CPUs: with two,
a 2-CPU instance would run one unit at a time. Timed is the audit's evaluation, the part that fans out; the
report's figures are drawn on the driver whatever the executor, so their seconds are measured once and
added for the whole-audit speed-up.

Per-task overhead: the ray-1 wall time less the driver's own work (the local-1t evaluation less its units'
seconds) less the units' seconds inside the workers, per unit; its share is that over the mean unit time.
Every Ray run must give the samples of the local run on as many threads (``local-1t``) byte for byte (the
``identical`` column; ``local`` itself is compared with ``local-1t``).
``groups``: the circle world's tight target at 4,000 particles with smc option ``run_groups = 2``: its units
are the groups of each round (the local row runs them one after another in this process).
Writes benchmarks/results/ray_scaling.json. ``--quick``: the demo's worlds, two targets each, tiny sizes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time

import torch

from _common import missing_cards, one_seed, parse, parser, print_table, skip, tests_module, write_results

MNIST_PAIRS = ((1, 7), (8, 9), (4, 9), (3, 5), (3, 8), (0, 6), (2, 7), (5, 6))  # 8 two-class targets per prior
MNIST_PARTICLES = 1024  # about 10 s a target on one core here: tasks long enough to price Ray's overhead
EXECUTORS = ("local", "local-1t", "ray-1", "ray-2")
OVERHEAD_GOAL = 0.05  # the issue's: per-task overhead at most 5% of tasks of 10 s or more
CASES = ("demo", "mnist16", "groups")
GROUPS = 2  # the groups case's run_groups: one a worker of ray-2
GROUP_PARTICLES = 4000  # 8 runs of 500: a target of about a minute, the demo's hardest


def _spec(case: str, quick: bool):
    from ppl_audit.audits.levelset import (DEFAULT_TARGETS, MNIST_TWO_CLASS_CONCENTRATION, LevelSetAuditSpec,
                                           TargetSpec, _two_way)

    if case == "demo":
        if quick:
            return LevelSetAuditSpec(targets=DEFAULT_TARGETS[1:3], num_particles=32, num_steps=8, num_samples=32,
                                     num_prior_samples=50, device="cpu")
        return LevelSetAuditSpec(device="cpu")
    if case == "groups":
        return LevelSetAuditSpec(worlds=("house-rocket-circle",), targets=DEFAULT_TARGETS[3:],
                                 num_particles=64 if quick else GROUP_PARTICLES, num_steps=8,
                                 num_samples=64 if quick else 1000, num_prior_samples=50 if quick else 1000,
                                 device="cpu", sampler_options={"run_groups": GROUPS})
    targets = tuple(TargetSpec(f"{a}-vs-{b}", _two_way(a, b), MNIST_TWO_CLASS_CONCENTRATION) for a, b in MNIST_PAIRS)
    return LevelSetAuditSpec(classifier="mnist-lenet5", worlds=("mnist-vae", "mnist-gan"), targets=targets,
                             num_particles=MNIST_PARTICLES, num_samples=MNIST_PARTICLES, num_prior_samples=200,
                             device="cpu", title="16 MNIST level sets")


@contextlib.contextmanager
def _executor(name: str):
    """The executor of a row: the local one, or a fresh local Ray instance of 1 or 2 CPUs (closed after)."""
    from ppl_audit.execute import LocalExecutor

    if name.startswith("local"):
        yield LocalExecutor(), 0.0
        return
    import logging

    import ray

    from ppl_audit.execute.ray_executor import RayExecutor

    start = time.perf_counter()
    ray.init(address="local", num_cpus=int(name.split("-")[1]), include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        yield RayExecutor(), time.perf_counter() - start
    finally:
        ray.shutdown()


def _samples(results) -> list[bytes]:
    return [t.samples.latents.numpy().tobytes() + t.samples.probs.numpy().tobytes()
            for w in results.worlds for t in w.targets]


def _unit_seconds(results) -> float:
    return sum(v for k, v in results.timings.items()
               if k.endswith("_seconds") and "/" in k and not k.endswith("/prior_seconds"))


def _units(spec, results) -> int:
    """Tasks of a run: one per target, or, with run groups, one per group of every round."""
    groups = spec.sampler_options.get("run_groups", 1)
    return sum(groups * t.metrics.get("smc_rounds", 1) if groups > 1 else 1 for w in results.worlds for t in w.targets)


def _case(case: str, spec, seed: int, cache) -> list[list]:
    from ppl_audit.audits import levelset
    from ppl_audit.execute import use_executor

    rows, local, one_thread = [], None, None
    torch_threads = tests_module("conftest").torch_threads  # threads set for a block, then restored
    present_seconds = None
    for name in EXECUTORS:
        threads = torch.get_num_threads() if name == "local" else 1
        with torch_threads(threads), _executor(name) as (executor, start_seconds), use_executor(executor):
            t0 = time.perf_counter()
            results = levelset.evaluate(spec, seed=seed, cache=cache)
            wall = time.perf_counter() - t0
        units = _units(spec, results)
        task_seconds = _unit_seconds(results)
        if local is None:
            local = (results, wall, task_seconds)
            t0 = time.perf_counter()
            levelset.present(results)
            present_seconds = time.perf_counter() - t0
        elif one_thread is None:
            one_thread = (results, wall, task_seconds)
        reference = one_thread or local
        driver = reference[1] - reference[2]  # prior draws, metrics: the same work whatever the executor
        # with run groups the driver times each target whole, its remote groups included: no overhead to price
        grouped = spec.sampler_options.get("run_groups", 1) > 1
        overhead = (wall - driver - task_seconds) / units if name == "ray-1" and not grouped else None
        mean_task = task_seconds / units
        rows.append([case, name, units, round(start_seconds, 2), round(wall, 2), round(mean_task, 2),
                     round(local[1] / wall, 3), round((local[1] + present_seconds) / (wall + present_seconds), 3),
                     None if overhead is None else round(overhead, 3),
                     None if overhead is None else round(overhead / mean_task, 4),
                     _samples(results) == _samples((one_thread or local)[0]) if name != "local-1t"
                     else _samples(results) == _samples(local[0])])
        print_table(COLUMNS, rows[-1:])
    return rows


COLUMNS = ["case", "executor", "units", "ray_start_seconds", "evaluate_seconds", "mean_unit_seconds",
           "speedup_evaluate", "speedup_audit", "overhead_per_task_seconds", "overhead_share_of_task", "identical"]


def main(argv=None) -> int:
    p = parser(__file__, __doc__)
    p.add_argument("--cases", nargs="+", choices=CASES, default=None, help="which cases (default all; --quick: "
                   "demo and groups)")
    args = parse(p, argv)
    if importlib.util.find_spec("ray") is None:
        return skip(args, "Ray is not installed (pip install -e .[ray])")
    seed = one_seed(args)
    cases = args.cases or (["demo", "groups"] if args.quick else list(CASES))
    if missing_cards(args, ["house-rocket-cnn"]):
        return skip(args, "the house-rocket-cnn weights are not cached (ppl-audit demo trains them)")
    rows = []
    for case in cases:
        if case == "mnist16" and missing_cards(args, ["mnist-lenet5", "mnist-vae", "mnist-gan"]):
            print("mnist16: skipped: the MNIST cards are not cached (ppl-audit train mnist-lenet5 ...)")
            continue
        rows += _case(case, _spec(case, args.quick), seed, args.cache_dir)
    print()
    print_table(COLUMNS, rows)
    shares = [r[9] for r in rows if r[9] is not None and r[5] >= 10]
    if shares:
        print(f"per-task overhead on tasks of 10 s or more: at most {max(shares):.1%} of a task "
              f"(goal <= {OVERHEAD_GOAL:.0%})")
    write_results(args, {"seed": seed, "columns": COLUMNS, "rows": rows, "overhead_goal": OVERHEAD_GOAL})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
