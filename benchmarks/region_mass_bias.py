"""The confident-region rate estimator against exact prior masses, with and without tempering's plateau guard.

Cases are the test suite's known answers (``tests/test_region_mass.py``): a 2-d standard-normal prior whose
image shows its latent, read back by ``P(b) = sigmoid(s * z1)`` (regions of mass 1.1e-2 at ``s = 2`` and
2.2e-6 at ``s = 1``), and a saturated classifier, ``P(b) = 1`` where ``z1 >= 3.09`` and exactly 0 elsewhere
(mass 1.0e-3), on whose plateau most runs of 256 start with no draw inside the region. Each case runs at
every seed with the soft indicator's maximum passed to tempering (the estimator's default) and without it
(``run_smc`` patched to drop the argument). Columns: the mean and spread over seeds of rate / truth, the mean
and largest |z| of ``(rate - truth) / rate_se``, seeds with a run that reported 0, seeds whose upper bound
fell below the truth, and classifier evaluations.

Run:  ../.venv/bin/python region_mass_bias.py               # seeds 0-11, about a minute; results/region_mass_bias.json
      ../.venv/bin/python region_mass_bias.py --quick       # two seeds of the saturated case
"""

from __future__ import annotations

import math
import statistics
from contextlib import contextmanager

import torch

import ppl_audit.inference.smc as smc_module
from ppl_audit.region_mass import sample_confident_region

from _common import parse, parser, print_table, tests_module, write_results

SATURATED_EDGE = 3.09  # z1 >= 3.09: prior mass 1.0e-3
QUICK = {"seeds": [0, 1]}


def _cases(known) -> dict:
    """Name -> (classifier, exact prior mass of its region at confidence 0.99)."""
    return {
        "smooth s=2 (1.1e-2)": (known.reading_classifier(2.0), known._truth(2.0)),
        "smooth s=1 (2.2e-6)": (known.reading_classifier(1.0), known._truth(1.0)),
        "saturated (1.0e-3)": (known.saturated_classifier(SATURATED_EDGE),
                               0.5 * math.erfc(SATURATED_EDGE / math.sqrt(2))),
    }


@contextmanager
def _guard(on: bool):
    """Tempering with the soft indicator's maximum as its guard (on), or without it (off)."""
    original = smc_module.run_smc

    def unguarded(*args, **kwargs):
        kwargs.pop("log_likelihood_bound", None)
        return original(*args, **kwargs)

    smc_module.run_smc = original if on else unguarded
    try:
        yield
    finally:
        smc_module.run_smc = original


def _row(name: str, guard: bool, regions: list, truth: float) -> list:
    ratios = [r.rate / truth if r.estimable else 0.0 for r in regions]
    zs = [(r.rate - truth) / r.rate_se for r in regions if r.estimable and r.rate_se > 0]
    return [name, "on" if guard else "off", round(statistics.fmean(ratios), 3),
            round(statistics.stdev(ratios), 3) if len(ratios) > 1 else None,
            round(statistics.fmean(zs), 2) if zs else None, round(max(map(abs, zs)), 2) if zs else None,
            sum(not r.estimable for r in regions), sum(min(r.run_rates) == 0 for r in regions),
            sum(r.upper_bound < truth for r in regions), round(statistics.fmean(r.num_evaluations for r in regions))]


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=range(12))
    args = parse(p, argv, quick=QUICK)
    known = tests_module("test_region_mass")
    cases = _cases(known)
    if args.quick:
        cases = {k: v for k, v in cases.items() if k.startswith("saturated")}
    rows = []
    with torch.no_grad():
        for name, (classifier, truth) in cases.items():
            for guard in (True, False):
                with _guard(guard):
                    regions = [sample_confident_region(known.PRIOR, classifier, 1, class_names=["a", "b"], seed=s)
                               for s in args.seeds]
                rows.append(_row(name, guard, regions, truth))
    columns = ["case", "guard", "rate_over_truth_mean", "rate_over_truth_sd", "z_mean", "z_abs_max",
               "seeds_not_estimable", "seeds_with_a_zero_run", "seeds_bound_below_truth", "evaluations_mean"]
    print(f"confident-region rates against exact masses, default settings, seeds {args.seeds}")
    print_table(columns, rows)
    write_results(args, {"benchmark": "region_mass_bias", "columns": columns, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
