"""Which SMC runs lose the level set's main region, and at which stage (issue 21: why MNIST cells fail).

Runs the default level-set SMC (one round) on one target and records every stage of every run. The
*main region* is where the run with the largest log evidence ends: within ``--radius`` of its final mean,
in the sampler's own space (the prior's unconstrained space). For each stage the script prints the
share of each run's particles inside that region, and at the end each run's log evidence and share. A
run that ends with under half its particles there *missed* the main region: its log evidence says how
much mass it left out. ``--options`` passes sampler options (``{"resampling": "ordered"}``,
``{"move": "mixed"}``) to compare levers on the same seed.

Where the level set is many small islands rather than one main region, ``--islands K`` also splits the
final particles of all runs into ``K`` islands (k-means, seeded) and prints each run's share of each: runs
whose moves cannot cross between islands keep the shares they had when the islands parted, so the shares
differ from run to run (and nested R-hat with them) however long each run moves.

Run (from benchmarks/; MNIST targets need the MNIST models cached or --data-dir):
      ../.venv/bin/python smc_mode_tracking.py --data-dir ../../shared/data --world mnist-vae \\
          --target ambiguous --concentration 3000 --seed 0           # results/smc_mode_tracking.json
      ../.venv/bin/python smc_mode_tracking.py --quick                 # house/rocket, 128 particles
"""

from __future__ import annotations

import json
import sys

import torch

from _common import one_seed, parse, parser, print_table, write_results

from ppl_audit.audits import worlds as registry
from ppl_audit.inference import smc
from ppl_audit.sampling import sample_level_set

MNIST_TARGETS = {"ambiguous": [0.1] * 10, "1-vs-7": [0.01] + [0.46] + [0.01] * 5 + [0.46] + [0.01] * 2,
                 "8-vs-9": [0.01] * 8 + [0.46, 0.46]}  # analyses/mnist-levelsets.toml's
HOUSE_ROCKET_TARGETS = {"ambiguous": [0.5, 0.5]}
MISSED_SHARE = 0.5  # a run with less than half its final particles in the main region missed it
KMEANS_ITERATIONS = 50  # Lloyd iterations: a few thousand points in 5-10 dimensions settle in far fewer
QUICK = {"world": "house-rocket", "target": "ambiguous", "concentration": 10.0, "particles": 128}


def _recording_step(stages: list):
    """``smc.step`` that also keeps ``(beta (R,), particles (R, M, D))`` after every stage."""
    step = smc.step

    def recorded(generator, state, target, config):
        new_state, info = step(generator, state, target, config)
        stages.append((new_state.beta.clone(), new_state.particles.view(config.num_runs, config.particles_per_run, -1)
                       .clone()))
        return new_state, info

    return recorded


def _shares(stages: list, centre: torch.Tensor, radius: float) -> list[list[float]]:
    """Per stage, each run's share of particles within ``radius`` of ``centre``."""
    return [((z - centre).norm(dim=-1) < radius).float().mean(dim=1).tolist() for _, z in stages]


def _islands(final: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split the final particles ``(R, M, D)`` of all runs into ``k`` islands by k-means (``k`` particles
    drawn at random start it): ``(shares (R, k), centres (k, D), spreads (k,))``, islands by pooled share."""
    runs, m, _ = final.shape
    x = final.reshape(runs * m, -1)
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
    for _ in range(KMEANS_ITERATIONS):
        label = torch.cdist(x, centres).argmin(dim=1)
        centres = torch.stack([x[label == j].mean(dim=0) if (label == j).any() else centres[j] for j in range(k)])
    label = torch.cdist(x, centres).argmin(dim=1)
    shares = torch.nn.functional.one_hot(label, k).view(runs, m, k).double().mean(dim=1)
    spreads = torch.stack([x[label == j].std(dim=0).mean() if (label == j).sum() > 1 else x.new_zeros(())
                           for j in range(k)])
    order = shares.mean(dim=0).argsort(descending=True)
    return shares[:, order], centres[order], spreads[order]


def _print_islands(shares: torch.Tensor, spreads: torch.Tensor, log_z: torch.Tensor) -> list[list]:
    """Print each island's pooled share, its spread over runs, and each run's shares; returns the rows."""
    columns = ["island", "pooled_share", "share_sd_over_runs", "share_min", "share_max", "spread"]
    rows = [[j, round(float(s.mean()), 3), round(float(s.std()), 3), round(float(s.min()), 3),
             round(float(s.max()), 3), round(float(spreads[j]), 3)] for j, s in enumerate(shares.T)]
    print(f"{shares.shape[1]} islands of the final particles (k-means over all runs); spread: mean sd of an "
          "island's particles per latent, in the sampler's space")
    print_table(columns, rows)
    print("each run's share of each island (columns as above), and its log evidence:")
    print_table(["run", *[f"island_{j}" for j in range(shares.shape[1])], "log_evidence"],
                [[r, *[round(v, 2) for v in share.tolist()], round(float(z), 2)]
                 for r, (share, z) in enumerate(zip(shares, log_z))])
    return rows


def main(argv=None) -> int:
    p = parser(__file__, __doc__)
    p.add_argument("--world", default="mnist-vae")
    p.add_argument("--classifier", default=None, help="default: the world's (mnist-lenet5, house-rocket-cnn)")
    p.add_argument("--target", default="ambiguous", help="ambiguous, 1-vs-7 or 8-vs-9 (MNIST)")
    p.add_argument("--concentration", type=float, default=3000.0)
    p.add_argument("--particles", type=int, default=4096)
    p.add_argument("--radius", type=float, default=0.3, help="the main region's radius, in the sampler's space")
    p.add_argument("--options", type=json.loads, default=None, help="sampler options as JSON")
    p.add_argument("--islands", type=int, default=0, help="also split the final particles into this many "
                   "islands (k-means) and print each run's share of each")
    args = parse(p, argv, quick=QUICK)
    seed = one_seed(args)
    torch.set_grad_enabled(False)
    mnist = registry.world_family(args.world) == registry.MNIST
    targets = MNIST_TARGETS if mnist else HOUSE_ROCKET_TARGETS
    if not 0 <= args.islands <= args.particles:
        print(f"smc_mode_tracking: error: --islands must be in 0..{args.particles} (the particles), got "
              f"{args.islands}", file=sys.stderr)
        return 2
    if args.target not in targets:
        print(f"smc_mode_tracking: error: unknown target {args.target!r} for {args.world} "
              f"(one of {', '.join(targets)})", file=sys.stderr)
        return 2
    name = args.classifier or ("mnist-lenet5" if mnist else "house-rocket-cnn")
    clf = registry.load_classifier(name, device="cpu", cache=args.cache_dir, data_dir=args.data_dir)
    prior = registry.load_world(args.world, device="cpu", cache=args.cache_dir, data_dir=args.data_dir)
    stages: list = []
    options = {**(args.options or {}), "max_rounds": 1}
    original = smc.step
    smc.step = _recording_step(stages)
    try:
        res = sample_level_set(prior, clf, targets[args.target], concentration=args.concentration, method="smc",
                               num_particles=args.particles, seed=seed, device="cpu", options=options)
    finally:
        smc.step = original
    log_z = torch.tensor(res.chain.info["log_evidence"])
    final = stages[-1][1]
    centre = final[int(log_z.argmax())].mean(dim=0)
    shares = _shares(stages, centre, args.radius)
    missed = [r for r, s in enumerate(shares[-1]) if s < MISSED_SHARE]
    columns = ["stage", "beta_median"] + [f"run_{r}" for r in range(len(log_z))]
    rows = [[k, round(float(beta.median()), 5)] + [round(s, 3) for s in share]
            for k, ((beta, _), share) in enumerate(zip(stages, shares))]
    print(f"{args.world} {args.target} at concentration {args.concentration:g}, seed {seed}, "
          f"{len(log_z)} runs of {final.shape[1]}: share of each run's particles within {args.radius} of the "
          "main region (where the run with the largest log evidence ends)")
    print_table(columns, rows)
    print("log evidence per run: " + " ".join(f"{v:.2f}" for v in log_z.tolist()))
    print(f"runs that missed the main region: {len(missed)} of {len(log_z)} {missed}; nested R-hat "
          f"{res.metrics['nested_rhat_max']:.3f}")
    islands = {}
    if args.islands > 0:
        shares, centres, spreads = _islands(final, args.islands, seed)
        islands = {"islands": {"rows": _print_islands(shares, spreads, log_z), "run_shares": shares.tolist(),
                               "centres": centres.tolist()}}
    moves = res.chain.info.get("acceptance_per_step") or []
    write_results(args, {
        "benchmark": "smc_mode_tracking",
        "settings": {"world": args.world, "classifier": name, "target": args.target,
                     "concentration": args.concentration, "particles": args.particles, "radius": args.radius,
                     "options": options},
        "seed": seed, "columns": columns, "rows": rows, "log_evidence": log_z.tolist(), "missed_runs": missed,
        "nested_rhat_max": res.metrics["nested_rhat_max"], "classifier_evaluations":
            res.metrics["classifier_evaluations"], "log_evidence_sd": res.metrics.get("log_evidence_sd"),
        "final_acceptance": moves[-4:], **islands,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
