"""Command line: argument parsing only; sub-commands map onto audits.

Every user error (a :class:`~ppl_audit.errors.PplAuditError`) becomes one
line on stderr and exit status 2; progress goes to stderr unless ``--quiet``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ppl_audit.errors import InvalidInputError, PplAuditError
from ppl_audit.levelset import RELAXATIONS
from ppl_audit.sampling import DEFAULT_METHOD, METHODS

EXIT_USAGE = 2  # argparse's own status for bad arguments; we use it for every user error
DEFAULT_DEMO_OUT = "reports/demo"


class _Progress:
    """Draws one tqdm bar per task on stderr."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bars = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        bar = self._bars.get(task)
        if bar is None:
            for other in self._bars.values():
                other.close()
            bar = self._bars[task] = self._tqdm(total=total, desc=task, file=sys.stderr, leave=False, mininterval=0.5)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close(self):
        for bar in self._bars.values():
            bar.close()


def _parse_target(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"target must be comma-separated numbers like 0.5,0.5, got {text!r}")
    return values


def _add_common(p: argparse.ArgumentParser, *, out_default: str | None) -> None:
    p.add_argument("--out", default=out_default, required=out_default is None, help="output folder of the report"
                   + (f" (default: {out_default})" if out_default else ""))
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the audit's, 0)")
    p.add_argument("--method", default=None, choices=METHODS,
                   help=f"sampler (default: the audit's, else {DEFAULT_METHOD}); nuts/svi/hmc need a differentiable classifier")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")
    p.add_argument("--cache-dir", default=None, help="weights cache (default: $PPL_AUDIT_CACHE or ~/.cache/ppl-audit)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The ``ppl-audit`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="ppl-audit",
        description="Audit image classifiers with probabilistic programming.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="level-set audit of the built-in house/rocket world",
                          description="Run the level-set audit of the built-in house/rocket world (and its "
                                      "out-of-distribution circle variant) with default settings; trains and "
                                      "caches the classifier on first use.")
    _add_common(demo, out_default=DEFAULT_DEMO_OUT)

    ls = sub.add_parser("levelset", help="sample one level set of a built-in world",
                        description="Sample inputs whose classifier prediction matches --target.")
    ls.add_argument("--world", default="house-rocket", help="house-rocket or house-rocket-circle")
    ls.add_argument("--target", type=_parse_target, required=True,
                    help="target prediction over [rocket, house], e.g. 0.5,0.5")
    ls.add_argument("--name", default="target", help="name of the target in the report")
    ls.add_argument("--concentration", type=float, default=10.0, help="Dirichlet concentration alpha > 0 (default 10)")
    ls.add_argument("--relaxation", default="dirichlet", choices=RELAXATIONS,
                    help="prediction likelihood: the paper's dirichlet, or gaussian Normal(f(x), sigma)")
    ls.add_argument("--sigma", type=float, default=None, help="scale of the gaussian relaxation (default 0.05)")
    ls.add_argument("--particles", type=int, default=1000, help="particles / chains N (default 1000)")
    ls.add_argument("--steps", type=int, default=200, help="steps per chain T for mh/hmc/nuts, optimisation steps for svi (default 200)")
    ls.add_argument("--samples", type=int, default=None, help="samples kept, <= N (default N)")
    ls.add_argument("--classifier", default="house-rocket-cnn", help="model card name or path")
    _add_common(ls, out_default=None)

    run = sub.add_parser("run", help="run a declarative audit file", description="Run an audit file (TOML).")
    run.add_argument("audit_file", help="path to an audit file, e.g. analyses/house-rocket.toml")
    _add_common(run, out_default=None)

    train = sub.add_parser("train", help="build a model card's weights into the cache",
                           description="Train the model described by a model card and store it in the cache.")
    train.add_argument("card", help="model card path or name, e.g. models/house-rocket-cnn.toml")
    train.add_argument("--retrain", action="store_true", help="train even if cached weights exist")
    train.add_argument("--cache-dir", default=None, help="weights cache folder")
    train.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def _version() -> str:
    from ppl_audit import __version__

    return __version__


def _run_audit(module, spec, seed, args, progress) -> int:
    from ppl_audit.report import check_output_dir, write_report

    out = check_output_dir(args.out)  # refuse a bad destination before minutes of work
    report = module.run(spec, seed=seed, progress=progress, cache=args.cache_dir)
    path = write_report(report, out)
    warnings = list(report.iter_warnings())
    if not args.quiet:
        print(f"report written to {path}/report.html ({len(warnings)} warning(s); "
              f"{report.timings.get('total_seconds', 0):.1f} s)", file=sys.stderr)
    return 0


def _command(args, progress) -> int:
    import dataclasses

    from ppl_audit.audits import levelset as levelset_audit
    from ppl_audit.audits.spec import validate_seed

    if args.command == "train":
        from ppl_audit.cards import load_card
        from ppl_audit.classifiers.house_rocket import load_house_rocket_classifier

        card = load_card(args.card)
        start = time.perf_counter()
        clf = load_house_rocket_classifier(card, cache=args.cache_dir, progress=progress, retrain=args.retrain)
        metrics = clf.info.get("metrics", {})
        print(f"{card.name}: test accuracy {metrics.get('test_accuracy', float('nan')):.4f} "
              f"(expected >= {card.expected.get('min_test_accuracy', 'n/a')}), weights {clf.weights_path} "
              f"[{time.perf_counter() - start:.1f} s]")
        return 0
    if args.command == "run":
        from ppl_audit.audits import load_audit_file

        module, spec, seed = load_audit_file(args.audit_file)
    elif args.command == "demo":
        module, spec, seed = levelset_audit, levelset_audit.LevelSetAuditSpec(), 0
    else:  # levelset
        target = levelset_audit.TargetSpec(args.name, args.target, args.concentration, args.relaxation, args.sigma)
        spec = levelset_audit.LevelSetAuditSpec(
            title=f"Level set '{args.name}' on {args.world}",
            worlds=(args.world,),
            targets=(target,),
            num_particles=args.particles,
            num_steps=args.steps,
            num_samples=args.samples if args.samples is not None else args.particles,
            classifier=args.classifier,
        )
        module, seed = levelset_audit, 0
    if args.device is not None:
        spec = dataclasses.replace(spec, device=args.device)
    if args.method is not None:
        spec = dataclasses.replace(spec, method=args.method)
    if args.seed is not None:
        try:
            seed = validate_seed(args.seed)
        except PplAuditError as exc:
            raise InvalidInputError(f"--seed: {exc}") from exc
    return _run_audit(module, spec, seed, args, progress)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ppl-audit`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING,
                        format="ppl-audit: warning: %(message)s", stream=sys.stderr)
    progress = None if args.quiet else _Progress()
    try:
        return _command(args, progress)
    except PplAuditError as exc:
        print(f"ppl-audit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ppl-audit: interrupted", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
