"""Level-set samplers side by side: the default SMC against the best general-purpose peers (issue 21, item 4).

Every peer samples the same level sets (``_reference.CASES``: the circle world at concentrations 10 and
1,000, house/rocket at 1,000, MNIST VAE and GAN ambiguous and 1-vs-7 at 10) through the same log
density: ``u`` in the unit cube, ``z = prior.from_unit_cube(u)`` (a class coordinate and truncated-normal
inverse CDFs for house/rocket, the normal inverse CDF for the decoder priors), the Dirichlet-relaxed
log likelihood of the classifier's prediction of ``decode(z)``. Pyro NUTS and the default SMC use the
package's own ``sample_level_set`` on the same level set.

Peers and the settings a fair user would choose (``D`` the unit cube's dimension: 4 house/rocket,
7 circle, 5 MNIST):

* ``smc``: ``sample_level_set(method="smc")`` with default options, the audit's particles (1,000 for
  house/rocket, 4,096 for MNIST): the method under test.
* ``nuts``: ``sample_level_set(method="nuts")`` (Pyro NUTS), 2 chains, 150 warm-up and 150 kept steps
  each: enough for step-size and mass adaptation, and what the time budget allows at 1-10 ESS/s.
* ``pocomc``: ``pocomc.Sampler`` with uniform priors on the cube, ``vectorize=True``, its default
  ``n_effective=512, n_active=256``, flow training cut to ``epochs=200`` (default 5,000 with early
  stopping; the flow's training was where its time went), ``run(n_total=2048, n_evidence=2048)``.
* ``nautilus``: ``nautilus.Sampler`` with the cube as its prior, ``vectorized=True``,
  ``n_live = max(500, 100 D)`` (default 2,000, meant for harder, higher-dimensional problems), one
  network instead of 4 (``n_networks=1``: training is its bottleneck on 2 cores),
  ``run(n_eff=2000, discard_exploration=True)``.
* ``dynesty``: static ``NestedSampler``, ``nlive = max(250, 50 D)``, multi-ellipsoid bounds, uniform
  sampling within them (dynesty's choice for ``D < 10``), batched: a queue of 64 proposals whose
  likelihood calls run in lockstep threads and are evaluated as one batch (``LockstepPool``);
  ``run_nested(dlogz=0.1)``.

Columns (means over seeds unless said): status, seconds, log-likelihood evaluations, ESS, ESS/s, ESS per
evaluation, log Z mean and sd over seeds, the largest between-seed sd of a posterior mean over the
posterior sd (``mean_spread_over_sd``), and the largest |z| against the reference
(``results/levelset_reference.json``; ``benchmarks/levelset_reference.py`` makes it) over seeds and
quantities. ESS: SMC's from the spread of its independent runs' means (the smallest over quantities of
``(sd / MCSE)^2``); nested samplers' and pocoMC's the Kish ESS of their weights; NUTS's ArviZ bulk ESS
(smallest over latents). A peer's MCSE for the z-scores is ``sd / sqrt(ESS)``.

Each peer runs in its own process with a wall-time budget per case and seed: ``BUDGET_FACTOR`` (10)
times the default SMC's seconds, at most ``--max-seconds``; past it the row says "did not finish within
Xs". A peer library that is not installed gives the row "not installed (pip install -e .[peers])". A
log density returning NaN or +inf, or a transform leaving the unit cube, stops that peer with an error
that names it.

Run (from the repository root):
      nice -n 19 .venv/bin/python benchmarks/levelset_peers.py --cases house-rocket-c1000   # results/levelset_peers.json
      nice -n 19 .venv/bin/python benchmarks/levelset_peers.py --data-dir ../shared/data    # every case, 3 seeds
      .venv/bin/python benchmarks/levelset_peers.py --quick        # tiny sizes, one seed; writes nothing unless --out
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


from _common import RESULTS, parse, parser, print_table, stamp
from _reference import CASES as ALL_CASES
from _reference import (PosteriorEstimate, load_case, prior_importance, quantity_names, runs_summary,
                        smc_runs, z_scores)

SCHEMA_VERSION = 1
PEERS = ("smc", "nuts", "pocomc", "nautilus", "dynesty")
MODULES = {"pocomc": "pocomc", "nautilus": "nautilus", "dynesty": "dynesty"}  # import names of the extras
CASES = ("circle-c10", "circle-c1000", "house-rocket-c1000", "vae-ambiguous-c10", "vae-1-vs-7-c10",
         "gan-ambiguous-c10", "gan-1-vs-7-c10")
BUDGET_FACTOR = 10  # a peer may take this many times the default SMC's seconds (issue 21)
MAX_SECONDS = 600  # ... and at most this long per case and seed
SMC_TIMEOUT = 600  # the default SMC itself: a safety net only, its time sets the others' budgets
LOAD_SLACK = 60  # seconds a child may spend importing and loading models on top of its budget
WEIGHT_FLOOR = 1e-12  # posterior points lighter than this share of the heaviest are dropped before summaries
NOT_INSTALLED = "not installed (pip install -e .[peers])"
SPEED_GOAL = 10  # the default method's ESS/s over the best peer's (issue 21)
FULL = {
    "nuts": {"num_chains": 2, "num_warmup": 150, "num_samples": 150},
    "pocomc": {"n_effective": 512, "n_active": 256, "epochs": 200, "n_total": 2048, "n_evidence": 2048},
    "nautilus": {"n_live_per_dim": 100, "n_live_min": 500, "n_networks": 1, "n_eff": 2000},
    "dynesty": {"nlive_per_dim": 50, "nlive_min": 250, "queue_size": 64, "dlogz": 0.1},
}
QUICK = {  # smoke-test sizes: seconds, not results
    "smc": {"particles": 128},
    "nuts": {"num_chains": 1, "num_warmup": 10, "num_samples": 10},
    "pocomc": {"n_effective": 128, "n_active": 128, "epochs": 5, "n_total": 128, "n_evidence": 128},
    "nautilus": {"n_live_per_dim": 25, "n_live_min": 100, "n_networks": 1, "n_eff": 200,
                 "neural_network_kwargs": {"max_iter": 20}},
    "dynesty": {"nlive_per_dim": 10, "nlive_min": 40, "queue_size": 16, "dlogz": 5.0},
}


class PeerInputError(RuntimeError):
    """The shared log density met input it cannot score: it names the peer and what was wrong."""


class CubeDensity:
    """The level set's log likelihood over the unit cube, batched, counted and checked.

    ``u (n, U) -> log L(from_unit_cube(u)) (n,)`` as float64 numpy; the prior is the uniform on the
    cube. Predictions are cached by the bytes of ``u`` so that summaries reuse them.
    """

    def __init__(self, level_set, peer: str, device="cpu"):
        self.level_set, self.peer, self.device = level_set, peer, torch.device(device)
        self.prior = level_set.prior
        self.dim = self.prior.unit_cube_dim
        self.evaluations = 0
        self.cache: dict[bytes, np.ndarray] = {}
        self.lock = threading.Lock()

    def latents(self, u: np.ndarray) -> torch.Tensor:
        """The prior's latents at cube points ``u``, on the level set's device (the peers hand numpy)."""
        from ppl_audit.errors import InvalidInputError

        try:
            z = self.prior.from_unit_cube(torch.as_tensor(np.atleast_2d(u), dtype=torch.float64, device=self.device))
        except InvalidInputError as exc:
            raise PeerInputError(f"{self.peer}: the prior transform's input left the unit cube: {exc}") from None
        return z.to(torch.float32)

    def predict(self, u: np.ndarray) -> np.ndarray:
        u = np.ascontiguousarray(np.atleast_2d(u), dtype=np.float64)
        with torch.no_grad():
            z = self.latents(u)
            if not torch.isfinite(self.prior.log_prob(z)).all():
                raise PeerInputError(f"{self.peer}: the prior transform returned latents outside the prior's support")
            probs = self.level_set.predict(z).double().cpu().numpy()
        with self.lock:
            self.evaluations += u.shape[0]
            for row, p in zip(u, probs):
                self.cache[row.tobytes()] = p
        return probs

    def __call__(self, u: np.ndarray) -> np.ndarray:
        u = np.atleast_2d(np.asarray(u, dtype=np.float64))
        probs = self.predict(u)
        with torch.no_grad():
            log_l = self.level_set.log_likelihood(torch.from_numpy(probs).to(self.device)).cpu().numpy()
        bad = np.isnan(log_l) | (log_l == np.inf)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PeerInputError(f"{self.peer}: the log likelihood returned {log_l[i]} at u = {u[i].tolist()}")
        return log_l

    def summary(self, u: np.ndarray, log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Weighted means and sds of the latents and predictions of points ``u``, and the Kish ESS."""
        log_w = np.asarray(log_w, dtype=np.float64)
        keep = log_w - log_w.max() > math.log(WEIGHT_FLOOR)
        u, w = np.atleast_2d(u)[keep], np.exp(log_w[keep] - log_w.max())
        w = w / w.sum()
        probs = [self.cache.get(np.ascontiguousarray(row, dtype=np.float64).tobytes()) for row in u]
        missing = [i for i, p in enumerate(probs) if p is None]
        if missing:
            for i, p in zip(missing, self.predict(u[missing])):
                probs[i] = p
        x = np.concatenate([self.latents(u).double().cpu().numpy(), np.stack(probs)], axis=1)
        mean = w @ x
        sd = np.sqrt(np.clip(w @ (x - mean) ** 2, 0, None))
        return mean, sd, float(1.0 / np.square(w).sum())


class LockstepPool:
    """A ``map`` for dynesty's proposal queue that batches the likelihood calls of all its proposals.

    Give dynesty :meth:`loglike` as its likelihood and this object as its pool. ``map`` runs each task in
    its own thread; a thread's likelihood call waits until every running task has made one (or finished),
    then all the waiting points are evaluated as one batch. Outside ``map`` a call is evaluated alone.
    """

    def __init__(self, density: CubeDensity):
        self.density = density
        self.size = 1
        self.state = None
        self.cond = threading.Condition()

    def _flush(self):  # holding cond: evaluate every pending point in one batch
        pending = self.state["pending"]
        keys = list(pending)
        try:
            values = self.density(np.stack([pending[k] for k in keys]))
            self.state["results"].update(zip(keys, values))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting thread, then re-raised by map
            self.state["error"] = exc
        pending.clear()
        self.cond.notify_all()

    def loglike(self, v) -> float:
        if self.state is None:
            return float(self.density(np.asarray(v, dtype=np.float64)[None])[0])
        key = threading.get_ident()
        with self.cond:
            state = self.state
            state["pending"][key] = np.asarray(v, dtype=np.float64)
            if len(state["pending"]) == state["running"]:
                self._flush()
            while key not in state["results"] and state["error"] is None:
                self.cond.wait()
            if state["error"] is not None:
                raise state["error"]
            return float(state["results"].pop(key))

    def map(self, func, iterable):
        tasks = list(iterable)
        results = [None] * len(tasks)
        self.state = {"running": len(tasks), "pending": {}, "results": {}, "error": None}

        def work(i, task):
            try:
                results[i] = func(task)
            except Exception as exc:  # noqa: BLE001
                with self.cond:
                    self.state["error"] = self.state["error"] or exc
            finally:
                with self.cond:
                    self.state["running"] -= 1
                    if self.state["pending"] and len(self.state["pending"]) == self.state["running"]:
                        self._flush()
                    self.cond.notify_all()

        threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(tasks)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if self.state["error"] is not None:
                raise self.state["error"]
        finally:
            self.state = None
        return results


# ------------------------------------------------------------------------------------------ one peer run
def run_peer(spec: dict) -> dict:
    """One peer on one case and seed (in its own process): seconds, evaluations, ESS, means, sds, log Z."""
    device = spec.get("device", "cpu")
    case = load_case(spec["case"], data_dir=spec.get("data_dir"), cache_dir=spec.get("cache_dir"), device=device)
    level_set = case.level_set()
    peer, seed, s = spec["peer"], spec["seed"], spec["settings"]
    names = quantity_names(level_set)
    from ppl_audit import diagnostics
    from ppl_audit.sampling import sample_level_set

    diagnostics._arviz()  # importing ArviZ is a one-off per process, not sampling time
    if peer == "smc":
        start = time.perf_counter()
        with torch.no_grad():
            res = sample_level_set(case.prior, case.classifier, list(case.target), concentration=case.concentration,
                                   num_particles=spec.get("particles") or case.particles, seed=seed, device=device)
        seconds = time.perf_counter() - start
        means, sds, log_z = smc_runs(res)
        est = runs_summary(means, sds, log_z, names, evaluations=res.metrics["classifier_evaluations"],
                           seconds=seconds, method="smc")
        return {**est.to_json(), "names": names, "mean": list(est.mean), "sd": list(est.sd), "mcse": list(est.mcse),
                "converged": res.metrics["converged"]}
    if peer == "nuts":
        start = time.perf_counter()
        res = sample_level_set(case.prior, case.classifier, list(case.target), concentration=case.concentration,
                               method="nuts", num_particles=s["num_chains"],
                               num_steps=s["num_warmup"] + s["num_samples"],
                               warmup_fraction=s["num_warmup"] / (s["num_warmup"] + s["num_samples"]),
                               seed=seed, device=device)
        seconds = time.perf_counter() - start
        x = torch.cat([res.chain.trace, res.chain.extras_trace], -1).double().reshape(-1, len(names))
        return {"names": names, "mean": x.mean(0).tolist(), "sd": x.std(0).tolist(), "ess": res.metrics["ess_bulk_min"],
                "log_z": None, "log_z_se": None, "seconds": seconds,
                "evaluations": res.metrics["classifier_evaluations"]}
    density = CubeDensity(level_set, peer, device)
    dim = density.dim
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:  # CubeDensity scores without gradients; pocoMC trains with them
        start = time.perf_counter()
        if peer == "pocomc":
            import pocomc
            from scipy.stats import uniform

            sampler = pocomc.Sampler(pocomc.Prior([uniform(0, 1)] * dim), density, vectorize=True,
                                     n_effective=s["n_effective"], n_active=s["n_active"],
                                     train_config={"epochs": s["epochs"]}, pytorch_threads=None,
                                     output_dir=tmp, random_state=seed)
            sampler.run(n_total=s["n_total"], n_evidence=s["n_evidence"], progress=False)
            u, w, _, _ = sampler.posterior()
            log_w, (log_z, log_z_se) = np.log(w), sampler.evidence()
        elif peer == "nautilus":
            import nautilus

            n_live = max(s["n_live_min"], s["n_live_per_dim"] * dim)
            sampler = nautilus.Sampler(lambda u: u, density, n_dim=dim, n_live=n_live, n_networks=s["n_networks"],
                                       neural_network_kwargs=s.get("neural_network_kwargs", {}), vectorized=True,
                                       pass_dict=False, seed=seed)
            sampler.run(n_eff=s["n_eff"], discard_exploration=True, verbose=False)
            u, log_w, _ = sampler.posterior()
            log_z, log_z_se = sampler.log_z, None
        elif peer == "dynesty":
            import dynesty

            nlive = max(s["nlive_min"], s["nlive_per_dim"] * dim)
            pool = LockstepPool(density)
            sampler = dynesty.NestedSampler(pool.loglike, lambda u: u, dim, nlive=nlive, bound="multi",
                                            sample="unif", rstate=rng, queue_size=s["queue_size"], pool=pool)
            sampler.run_nested(dlogz=s["dlogz"], print_progress=False)
            r = sampler.results
            u, log_w = r.samples_u, r.logwt - r.logz[-1]
            log_z, log_z_se = float(r.logz[-1]), float(r.logzerr[-1])
        else:
            raise ValueError(f"unknown peer {peer!r}")
        seconds = time.perf_counter() - start
        evaluations = density.evaluations
        mean, sd, ess = density.summary(u, log_w)
    return {"names": names, "mean": mean.tolist(), "sd": sd.tolist(), "ess": ess, "log_z": float(log_z),
            "log_z_se": None if log_z_se is None else float(log_z_se), "seconds": seconds,
            "evaluations": evaluations}


def child(spec: dict, timeout: float) -> dict:
    """Run one peer in a subprocess; a crash or a timeout becomes a status, never an exception."""
    try:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                             timeout=timeout + LOAD_SLACK, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"status": f"did not finish within {timeout:.0f}s"}
    lines = [ln for ln in out.stdout.strip().splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"status": f"error: {tail[:300]}"}
    result = json.loads(lines[-1])
    if "error" in result:
        return {"status": f"error: {result['error']}"}
    if result["seconds"] > timeout:
        return {"status": f"did not finish within {timeout:.0f}s", **result}
    return {"status": "ok", **result}


def installed(peer: str) -> bool:
    module = MODULES.get(peer)
    return module is None or importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------------------------ the table
COLUMNS = ["case", "peer", "status", "seconds", "evaluations", "ess", "ess_per_second", "ess_per_evaluation",
           "log_z_mean", "log_z_sd", "mean_spread_over_sd", "max_abs_z_vs_reference"]


def summarise(case: str, peer: str, runs: list[dict], reference: PosteriorEstimate | None, budget: float) -> list:
    ok = [r for r in runs if r["status"] == "ok"]
    if len(ok) < len(runs):
        status = next(r["status"] for r in runs if r["status"] != "ok")
        if len(ok) == 0:
            return [case, peer, status] + [None] * (len(COLUMNS) - 3)
        status = f"{len(ok)}/{len(runs)} seeds ok; {status}"
    else:
        status = "ok"
    mean = lambda key: statistics.fmean(r[key] for r in ok)  # noqa: E731
    log_z = [r["log_z"] for r in ok if r.get("log_z") is not None]
    ref_sd = dict(zip(reference.names, reference.sd)) if reference else None
    sd_ref = np.array([ref_sd[n] for n in ok[0]["names"]] if ref_sd else np.mean([r["sd"] for r in ok], 0))
    spread = (np.std([r["mean"] for r in ok], axis=0, ddof=1) / sd_ref).max() if len(ok) > 1 else None
    max_z = None
    if reference is not None:
        zs = []
        for r in ok:
            mcse = [s / math.sqrt(max(r["ess"], 1.0)) for s in r["sd"]]
            est = PosteriorEstimate(tuple(r["names"]), tuple(r["mean"]), tuple(r.get("mcse") or mcse), tuple(r["sd"]),
                                    r.get("log_z") or 0.0, r.get("log_z_se") or 0.0, r["ess"], r["evaluations"],
                                    r["seconds"], peer)
            zs.append(z_scores(est, reference)["max_abs"])
        max_z = round(max(zs), 2)
    seconds, ess = mean("seconds"), mean("ess")
    return [case, peer, status, round(seconds, 1), round(mean("evaluations")), round(ess, 1),
            round(ess / seconds, 2), round(ess / mean("evaluations"), 5),
            round(statistics.fmean(log_z), 4) if log_z else None,
            round(statistics.stdev(log_z), 4) if len(log_z) > 1 else None,
            None if spread is None else round(float(spread), 3), max_z]


@functools.lru_cache(maxsize=None)
def quick_reference(case_name: str) -> PosteriorEstimate:
    case = load_case(case_name)
    return prior_importance(case.level_set(), 20_000, seed=12345)


def speed_goals(rows: list, cases) -> dict:
    """Per case: the default SMC's ESS/s over the best finished peer's (printed), against the goal."""
    goals = {}
    for case in cases:
        mine = {r[1]: r for r in rows if r[0] == case and r[6] is not None}
        others = {p: r[6] for p, r in mine.items() if p != "smc"}
        if "smc" in mine and others:
            best = max(others, key=others.get)
            ratio = mine["smc"][6] / others[best]
            goals[case] = {"smc_ess_per_second_over_best_peer": ratio, "best_peer": best, "goal": SPEED_GOAL}
            print(f"{case}: default SMC ESS/s = {ratio:.2f}x the best finished peer's ({best}; goal >= {SPEED_GOAL}x)")
    return goals


def reference_of(case: str, quick: bool) -> PosteriorEstimate | None:
    """The saved reference of ``case`` (read when the case's runs are done), a tiny one in --quick mode."""
    if quick:
        return quick_reference(case)
    path = RESULTS / "levelset_reference.json"
    saved = json.loads(path.read_text())["cases"] if path.exists() else {}
    if case not in saved:
        print(f"{case}: no reference in {path} (run benchmarks/levelset_reference.py --cases {case}); "
              "the agreement column stays empty", file=sys.stderr)
        return None
    return PosteriorEstimate.from_json(saved[case]["reference"])


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=(0, 1, 2))
    p.add_argument("--cases", nargs="+", choices=sorted(ALL_CASES), default=None,
                   help=f"default: the issue's ({', '.join(CASES)})")
    p.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="cap on a peer's budget per seed")
    p.add_argument("--device", default="cpu", help="where the level set is evaluated (cpu, cuda)")
    p.add_argument("--particles", type=int, default=None, help="the default SMC's particles (default: the audit's)")
    p.add_argument("--rescore", action="store_true",
                   help="recompute the table of results/levelset_peers.json (or --out) from its records")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = parse(p, argv)
    if args.rescore:  # recompute the table of a results file from its records and the current references
        path = Path(args.out) if args.out else RESULTS / "levelset_peers.json"
        data = json.loads(path.read_text())
        cases = sorted({k.split("/")[0] for k in data["records"]})
        refs = {case: reference_of(case, False) for case in cases}
        data["rows"] = [summarise(k.split("/")[0], k.split("/")[1], rec["runs"], refs[k.split("/")[0]],
                                  rec["budget_seconds"]) for k, rec in data["records"].items()]
        print_table(COLUMNS, data["rows"])
        data["goals"] = speed_goals(data["rows"], cases)
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        print(f"wrote {path}")
        return 0
    if args.one:
        try:
            print(json.dumps(run_peer(json.loads(args.one))))
        except PeerInputError as exc:
            print(json.dumps({"error": str(exc)}))
        return 0
    cases = ["house-rocket-c10"] if args.quick else (args.cases or list(CASES))
    seeds = args.seeds[:1] if args.quick else args.seeds
    settings = {**FULL, "smc": {}} if not args.quick else QUICK
    rows, records = [], {}
    for case in cases:
        budget = args.max_seconds
        peers = ["smc"] + [p for p in args.peers if p != "smc"] if "smc" in args.peers else args.peers
        for peer in peers:
            if not installed(peer):
                records[f"{case}/{peer}"] = {"budget_seconds": budget, "settings": settings.get(peer, {}),
                                             "runs": [{"status": NOT_INSTALLED}]}
                print(f"  {case} {peer}: {NOT_INSTALLED}", file=sys.stderr, flush=True)
                continue
            runs = []
            for seed in seeds:
                spec = {"case": case, "peer": peer, "seed": seed, "settings": settings.get(peer, {}),
                        "data_dir": args.data_dir, "cache_dir": args.cache_dir, "device": args.device,
                        "particles": args.particles if peer == "smc" else None}
                runs.append(child(spec, budget if peer != "smc" else SMC_TIMEOUT))
                r = runs[-1]
                print(f"  {case} {peer} seed {seed}: {r['status']}"
                      + (f", {r['seconds']:.1f} s, ESS {r['ess']:.0f}" if r["status"] == "ok" else ""),
                      file=sys.stderr, flush=True)
            records[f"{case}/{peer}"] = {"budget_seconds": budget, "settings": settings.get(peer, {}), "runs": runs}
            if not args.quick or args.out:  # records so far, so that a crash later loses nothing
                partial = Path(args.out or RESULTS / "levelset_peers.json").with_suffix(".partial.json")
                partial.write_text(json.dumps(records, indent=2, default=str) + "\n")
            if peer == "smc":
                done = [r["seconds"] for r in runs if r["status"] == "ok"]
                if done:
                    budget = min(args.max_seconds, BUDGET_FACTOR * statistics.fmean(done))
        reference = reference_of(case, args.quick)  # read once the case's runs are done
        rows += [summarise(case, key.split("/")[1], rec["runs"], reference, rec["budget_seconds"])
                 for key, rec in records.items() if key.split("/")[0] == case]
    print_table(COLUMNS, rows)
    goals = speed_goals(rows, cases)
    path = Path(args.out) if args.out else (None if args.quick else RESULTS / "levelset_peers.json")
    if path:  # a run updates its cases' rows and keeps the other cases'
        old = json.loads(path.read_text()) if path.exists() else {}
        if old.get("schema_version") != SCHEMA_VERSION:
            old = {}
        rows = [r for r in old.get("rows", []) if r[0] not in cases] + rows
        records = {**{k: v for k, v in old.get("records", {}).items() if k.split("/")[0] not in cases}, **records}
        goals = {**{k: v for k, v in old.get("goals", {}).items() if k not in cases}, **goals}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**stamp(args), "schema_version": SCHEMA_VERSION, "benchmark": "levelset_peers",
                                    "seeds": seeds, "settings": settings, "budget_factor": BUDGET_FACTOR,
                                    "max_seconds": args.max_seconds, "columns": COLUMNS, "rows": rows,
                                    "goals": goals, "records": records}, indent=2, sort_keys=True, default=str) + "\n")
        path.with_suffix(".partial.json").unlink(missing_ok=True)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
