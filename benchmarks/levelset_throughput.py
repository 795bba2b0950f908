"""Level-set sampler throughput on the house/rocket world: every backend, one model, one seed.

Rows: the raw batched evaluation rate (the limit no sampler passes), Pyro
NUTS, importance sampling from the prior, and each batched kernel (mh, hmc,
smc) at N = 1,000 and 4,096 chains, on the ambiguous target at concentration
10 and on a tight level set (concentration 1,000). Each sampler row runs in a
fresh subprocess so that its peak resident memory is its own.

Columns: wall seconds, ESS/s (the minimum over latents of the conservative
ESS: ArviZ bulk ESS, and for superchain runs the smaller of that and the ESS
from the spread of superchain means), the R-hat the method is judged by
(nested for superchain runs, split otherwise), Delta of the samples, the
share of wall time spent in model passes (render + classify + likelihood,
forward and backward), peak RSS, and whether the posterior means agree with
a long importance-sampling reference within 3 Monte Carlo standard errors.

Run:  python benchmarks/levelset_throughput.py [--quick] [--device cpu|cuda] [--sizes 4096 65536] [--methods raw is smc]
Writes benchmarks/results/levelset_throughput[_DEVICE].json. A --quick run: the raw rate, prior importance
sampling and SMC at 64 particles on the ambiguous target only, written only with --out.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import torch

import ppl_audit as pa
from ppl_audit import diagnostics
from ppl_audit.levelset import LevelSet
from ppl_audit.metrics import average_deviation
from ppl_audit.training import load_model

from _common import missing_cards, one_seed, parse, parser, print_table, skip, write_results

TARGETS = {"c10": ((0.5, 0.5), 10.0), "c1000": ((0.5, 0.5), 1000.0)}
SEED = 0  # the default seed; --seeds picks another, passed to each row's subprocess
QUICK_METHODS = ["raw", "is", "smc"]  # two fresh subprocesses: the quick run checks the path, not every kernel
REFERENCE_DRAWS = 2_000_000  # prior draws of the importance-sampling reference run (ESS ~65,000 at c10, ~6,500 at c1000)
IS_DRAWS = 200_000  # prior draws of the importance-sampling baseline row
NUTS = {"num_chains": 3, "num_warmup": 500, "num_samples": 1000}  # the reference configuration


class TimedLevelSet(LevelSet):
    """A LevelSet that accumulates (on the class) the seconds spent in forward model passes:
    render + classify (``predict``) and the likelihood. Backward passes run inside the
    samplers' autograd calls and are not counted, so gradient methods' shares are lower bounds."""

    model_seconds = 0.0

    def predict(self, z):
        start = time.perf_counter()
        out = super().predict(z)
        _sync(z.device)
        type(self).model_seconds += time.perf_counter() - start
        return out

    def log_likelihood(self, probs):
        start = time.perf_counter()
        out = super().log_likelihood(probs)
        type(self).model_seconds += time.perf_counter() - start
        return out


def peak_rss_mib() -> float:
    """This process's resident-memory high-water mark (VmHWM; ru_maxrss survives exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def raw_throughput(world, clf, device, n=8192, grad=False) -> float:
    ls = LevelSet(world, clf, [0.5, 0.5], 10.0)
    z = world.sample(n, generator=torch.Generator(device=device).manual_seed(0)).to(device)
    ls.log_density(z[:512])  # warm-up
    _sync(device)
    start = time.perf_counter()
    if grad:
        zz = z.clone().requires_grad_(True)
        torch.autograd.grad(ls.log_density(zz).sum(), zz)
    else:
        with torch.no_grad():
            ls.log_density(z)
    _sync(device)
    return n / (time.perf_counter() - start)


def reference_means(world, clf, device, draws=REFERENCE_DRAWS) -> dict:
    """Posterior means, sds and ESS of every target from one importance-sampling run of ``draws`` prior draws."""
    gen = torch.Generator(device=device).manual_seed(123)
    probs, zs = [], []
    with torch.no_grad():
        for _ in range(draws // 200_000):
            z = world.sample(200_000, generator=gen).to(device)
            probs.append(LevelSet(world, clf, [0.5, 0.5]).predict(z).cpu())
            zs.append(z.double().cpu())
    p, z = torch.cat(probs), torch.cat(zs)
    refs = {}
    for name, (target, alpha) in TARGETS.items():
        w = torch.softmax(LevelSet(world, clf, target, alpha).log_likelihood(p).double(), 0)
        mean = (w[:, None] * z).sum(0)
        var = (w[:, None] * (z - mean) ** 2).sum(0)
        refs[name] = {"mean": mean.tolist(), "sd": var.sqrt().tolist(), "ess": float(1 / (w**2).sum()), "draws": draws}
    return refs


def run_one(spec: dict) -> dict:
    """One sampler row (runs in its own process)."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    world = pa.make_world("house-rocket", device=device)
    clf = load_model("house-rocket-cnn", cache=spec.get("cache"), device=device, kind="house-rocket-classifier").model
    target, alpha = TARGETS[spec["target"]]
    method = spec["method"]
    diagnostics._arviz()  # importing ArviZ (~2 s) is a one-off per process, not sampling time
    start = time.perf_counter()
    if method == "is":
        ls = TimedLevelSet(world, clf, target, alpha)
        gen = torch.Generator(device=device).manual_seed(spec.get("seed", SEED))
        with torch.no_grad():
            z = world.sample(spec["draws"], generator=gen).to(device)
            log_w, probs = ls.log_density_and_probs(z)
            log_w = log_w - world.log_prob(z)
        w = torch.softmax(log_w.double(), 0).cpu()
        seconds = time.perf_counter() - start
        ess = float(1 / (w**2).sum())
        mean = (w[:, None] * z.double().cpu()).sum(0)
        idx = torch.multinomial(w, 1000, replacement=True, generator=torch.Generator().manual_seed(spec.get("seed", SEED)))
        delta = average_deviation(probs.cpu()[idx], torch.tensor(target))
        row = {"ess_min": ess, "rhat": None, "delta": delta, "means": mean.tolist(),
               "ess_per_latent": [ess] * 3, "model_seconds": ls.model_seconds}
    else:
        # Instrument the model passes of whichever backend runs.
        pa.sampling.LevelSet = TimedLevelSet
        TimedLevelSet.model_seconds = 0.0
        options = dict(spec.get("options", {}))
        res = pa.sample_level_set(world, clf, target, concentration=alpha, method=method,
                                  num_particles=spec["particles"], num_steps=spec["steps"], seed=spec.get("seed", SEED),
                                  device=device, options=options)
        _sync(device)
        seconds = time.perf_counter() - start
        per = res.diagnostics["per_latent"]
        ess = [min(d["ess_bulk"], d.get("ess_superchains", math.inf)) for d in per.values()]
        row = {"ess_min": min(ess), "ess_per_latent": ess,
               "rhat": res.diagnostics.get("nested_rhat_max", res.diagnostics["rhat_max"]),
               "rhat_kind": "nested" if "nested_rhat_max" in res.diagnostics else "split",
               "delta": res.metrics["delta"], "means": [d["mean"] for d in per.values()],
               "sds": [d["sd"] for d in per.values()], "model_seconds": TimedLevelSet.model_seconds,
               "converged": res.diagnostics["converged"]}
    row.update(seconds=seconds, peak_rss_mib=peak_rss_mib())
    return row


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=(SEED,))
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--methods", nargs="+", default=None,
                   help="default: raw nuts is mh hmc smc smc-rw (--quick: raw is smc)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="chains / particles of the batched kernels (default 1000 4096; --quick 256)")
    args = parse(p, argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    seed = one_seed(args)
    if args.quick and missing_cards(args, ["house-rocket-cnn"]):
        return skip(args, "the house-rocket-cnn weights are not cached (ppl-audit demo trains them)")
    if args.name == "levelset_throughput" and args.device != "cpu":
        args.name += f"_{args.device}"  # one results file per device
    methods = args.methods or (QUICK_METHODS if args.quick else ["raw", "nuts", "is", "mh", "hmc", "smc", "smc-rw"])
    targets = list(TARGETS)[:1] if args.quick else list(TARGETS)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    world = pa.make_world("house-rocket", device=device)
    clf = load_model("house-rocket-cnn", cache=args.cache_dir, device=device, kind="house-rocket-classifier").model
    sizes = args.sizes or ([64] if args.quick else [1000, 4096])
    # Steps per chain (warm-up included). HMC's gradient passes run at ~1/5 of the forward
    # rate here, so it gets fewer, shorter trajectories to stay within minutes.
    steps = {"mh": 40 if args.quick else 200, "hmc": 20 if args.quick else 40, "smc": 1, "smc-rw": 1}
    # smc-rw: the SMC sampler with random-walk moves (10 per stage), its setting before
    # independent moves from fitted mixtures became the default.
    options = {"hmc": {"num_leapfrog": 4}, "smc-rw": {"move": "rw", "num_moves": 10}}
    nuts = {"num_chains": 2, "num_warmup": 20, "num_samples": 20} if args.quick else NUTS
    ref_draws = 200_000 if args.quick else REFERENCE_DRAWS  # one chunk of reference_means
    raw_n = 1024 if args.quick else 8192  # evaluations timed for the raw rate
    raw = {"forward": raw_throughput(world, clf, device, raw_n),
           "forward_backward": raw_throughput(world, clf, device, raw_n, grad=True)}
    print(f"raw evaluation throughput: {raw['forward']:.0f}/s forward, {raw['forward_backward']:.0f}/s with gradients")
    refs = reference_means(world, clf, device, ref_draws)
    specs = []
    for target in targets:
        if "nuts" in methods:
            specs.append({"method": "nuts", "target": target, "particles": nuts["num_chains"],
                          "steps": nuts["num_warmup"] + nuts["num_samples"], "device": args.device,
                          "options": {}})
        if "is" in methods:
            specs.append({"method": "is", "target": target, "draws": 2_000 if args.quick else IS_DRAWS,
                          "particles": 2_000 if args.quick else IS_DRAWS, "steps": 0, "device": args.device})
        for label in ("mh", "hmc", "smc", "smc-rw"):
            if label in methods:
                for n in sizes:
                    specs.append({"method": label.split("-")[0], "label": label, "target": target, "particles": n,
                                  "steps": steps[label], "device": args.device, "options": options.get(label, {})})
    rows, records = [], []
    for spec in specs:
        spec.update(seed=seed, cache=args.cache_dir)
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"row {spec} failed")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ref = refs[spec["target"]]
        sd = r.get("sds") or ref["sd"]
        mcse = [s / math.sqrt(max(e, 1.0)) for s, e in zip(sd, r["ess_per_latent"])]
        ref_mcse = [s / math.sqrt(ref["ess"]) for s in ref["sd"]]
        z_scores = [abs(m - rm) / math.sqrt(a**2 + b**2) for m, rm, a, b in zip(r["means"], ref["mean"], mcse, ref_mcse)]
        r.update(spec=spec, ess_per_second=r["ess_min"] / r["seconds"], max_z_vs_reference=max(z_scores),
                 model_share=r["model_seconds"] / r["seconds"])
        records.append(r)
        rows.append([spec["target"], spec.get("label", spec["method"]), spec["particles"], r["seconds"], r["ess_min"],
                     r["ess_per_second"], r["rhat"], r.get("rhat_kind", "-"), r["delta"], r["model_share"],
                     r["peak_rss_mib"], r["max_z_vs_reference"]])
        print(f"  {spec['target']} {spec.get('label', spec['method'])} N={spec['particles']}: {r['seconds']:.1f} s, "
              f"ESS/s {r['ess_per_second']:.0f}", file=sys.stderr)
    columns = ["target", "method", "chains", "seconds", "ess_min", "ess_per_second", "rhat", "rhat_kind", "delta",
               "model_share", "peak_rss_mib", "max_z_vs_reference"]
    print_table(columns, rows)
    verdicts = {}
    for target in targets:
        nuts_rate = next((r["ess_per_second"] for r in records if r["spec"]["method"] == "nuts"
                          and r["spec"]["target"] == target), None)
        is_rate = next((r["ess_per_second"] for r in records if r["spec"]["method"] == "is"
                        and r["spec"]["target"] == target), None)
        for r in records:
            if r["spec"]["target"] != target or r["spec"].get("label") != pa.sampling.DEFAULT_METHOD:
                continue
            v = {"chains": r["spec"]["particles"], "ess_per_second": r["ess_per_second"],
                 "x_nuts": r["ess_per_second"] / nuts_rate if nuts_rate else None,
                 "x_importance": r["ess_per_second"] / is_rate if is_rate else None,
                 "percent_of_raw": 100 * r["ess_per_second"] / raw["forward"],
                 "rhat": r["rhat"], "rhat_kind": r.get("rhat_kind"), "converged": r.get("converged"),
                 "max_z_vs_reference": r["max_z_vs_reference"],
                 "overhead_share": 1 - r["model_share"], "peak_rss_mib": r["peak_rss_mib"]}
            verdicts.setdefault(target, []).append(v)
            print(f"{target}: default method {pa.sampling.DEFAULT_METHOD} N={v['chains']}: {v['ess_per_second']:.0f} "
                  f"ESS/s = {v['x_nuts'] or float('nan'):.0f}x NUTS, {v['x_importance'] or float('nan'):.2f}x "
                  f"prior IS, {v['percent_of_raw']:.1f}% of raw; {v['rhat_kind']} R-hat {v['rhat']:.4f}; "
                  f"max |z| vs reference {v['max_z_vs_reference']:.2f}; overhead {100 * v['overhead_share']:.0f}%")
    write_results(args, {"benchmark": "levelset_throughput", "seed": seed, "raw_evaluations_per_second": raw,
                         "reference": refs, "columns": columns, "rows": rows, "records": records,
                         "default_method": pa.sampling.DEFAULT_METHOD, "default_method_verdicts": verdicts,
                         "seconds": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
