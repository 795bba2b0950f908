"""Wang et al.'s risk-coverage comparison on MNIST + Omniglot + notMNIST, through the selective audit.

Runs ``analyses/mnist-selective.toml`` (CNN, VAE and GAN synthesis, their
hybrids, 1-NN and SDIM; about 31 minutes on 2 CPU cores once the models are
cached, 16 of them the refinement of the GANs' contested images) and prints, per classifier, MNIST accuracy, AURC, the lowest
attainable risk and the out-of-distribution images at maximum confidence,
then whether each hybrid lies at or below the CNN at every 5% coverage step.
``--from-report DIR`` summarises a report the audit already wrote instead
of running it again.

Run (from the repository root):
      .venv/bin/python benchmarks/selective_mnist.py --data-dir ../shared/data     # results/selective_mnist.json
      .venv/bin/python benchmarks/selective_mnist.py --from-report reports/mnist-selective
      .venv/bin/python benchmarks/selective_mnist.py --quick --from-report DIR   # the summary only; no output
A --quick run without --from-report is skipped: the audit needs a dozen trained models and ~31 minutes.
"""

from __future__ import annotations

import json
from pathlib import Path


from _common import REPO, parse, parser, print_table, skip, write_results

AUDIT_FILE = REPO / "analyses" / "mnist-selective.toml"


def main(argv=None) -> int:
    p = parser(__file__, __doc__, seeds=())
    p.add_argument("--from-report", default=None, help="folder of a report the audit wrote")
    args = parse(p, argv)
    seed = None
    if args.quick and not args.from_report:
        return skip(args, "the selective audit needs a dozen trained models and ~31 min; pass --from-report DIR")
    if args.from_report:
        report = json.loads((Path(args.from_report) / "report.json").read_text())
        metrics, timings = report["metrics"], report.get("timings", {})
        if not timings and (Path(args.from_report) / "timings.json").exists():
            timings = json.loads((Path(args.from_report) / "timings.json").read_text())
    else:
        from ppl_audit.audits import load_audit_file

        module, spec, seed = load_audit_file(AUDIT_FILE)
        seed = args.seeds[0] if args.seeds else seed  # default: the audit file's
        result = module.run(spec, seed=seed, cache=args.cache_dir, data_dir=args.data_dir)
        metrics, timings = json.loads(json.dumps(result.metrics)), result.timings
    rows = [[name, round(100 * m["mnist_accuracy"], 2), round(m["aurc"], 5), round(m["min_risk"], 4),
             round(m["coverage_at_min_risk"], 3), m["ood_at_max_confidence"]] for name, m in metrics["methods"].items()]
    print(f"MNIST {metrics['num_in']} + OoD {metrics['num_out']} (OoD counted wrong)")
    print_table(["classifier", "MNIST acc %", "AURC", "lowest risk", "at coverage", "OoD at max conf"], rows)
    for name, h in metrics["hybrid_vs_cnn"].items():
        print(f"{name}: at or below the CNN at every grid coverage: {h['at_or_below_everywhere']}; "
              f"lower AURC: {h['aurc_lower_than_cnn']}")
    write_results(args, {"seed": seed, "rows": rows, "audit_file": str(AUDIT_FILE.relative_to(REPO)),
                                     "num_in": metrics["num_in"], "num_out": metrics["num_out"],
                                     "methods": metrics["methods"], "hybrid_vs_cnn": metrics["hybrid_vs_cnn"],
                                     "latent_search": metrics.get("latent_search"), "sdim": metrics.get("sdim"),
                                     "models": metrics.get("models"), "timings": timings})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
