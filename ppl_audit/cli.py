"""Command line: argument parsing only; sub-commands map onto audits.

Every user error (a :class:`~ppl_audit.errors.PplAuditError`) becomes one
line on stderr and exit status 2; progress goes to stderr unless ``--quiet``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tomllib
from typing import Any

from ppl_audit.classifiers.external import OUTPUT_MODES
from ppl_audit.errors import InvalidInputError, PplAuditError
from ppl_audit.levelset import RELAXATIONS
from ppl_audit.sampling import DEFAULT_METHOD, METHODS
from ppl_audit.validators import check_seed

PROGRESS_SMOOTHING = 0.05  # tqdm's weight of the latest rate in its time-left estimate (see _Progress)
EXIT_USAGE = 2  # argparse's own status for bad arguments; we use it for every user error
DEFAULT_DEMO_OUT = "reports/demo"
DEFAULT_TRAIN_OUT = "reports/train-{name}"  # `train` writes its report here unless --out or --no-report
FORCE_HELP = ("write into a folder that also holds files ppl-audit did not write: they are kept, and only "
              "its own earlier report files are replaced")


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``ppl-audit: error: ...``, and exit status 2, like
    every other user error (argparse's default prints the whole usage block first)."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        text = " ".join(f"{command + ': ' if command else ''}{message}".split())
        help_hint = f"; see ppl-audit {command + ' ' if command else ''}--help"
        self.exit(EXIT_USAGE, f"ppl-audit: error: {text}{help_hint}\n")


class _Progress:
    """Draws one tqdm bar per task on stderr."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bars = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        bar = self._bars.get(task)
        if bar is None or done < bar.n:  # a new task, or one that runs again (one search per generator)
            self.close()
            # smoothing: tqdm's default (0.3) weighs the last half-second of steps at 30%, so on a shared
            # machine the time left swings by 2x with the neighbours' load; 0.05 averages over ~10 s of
            # updates, steady enough to read yet quick to follow a lasting change.
            bar = self._bars[task] = self._tqdm(total=total, desc=task, file=sys.stderr, leave=False,
                                                mininterval=0.5, smoothing=PROGRESS_SMOOTHING)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self._bars[task]

    def close(self):
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def _parse_shape(text: str) -> tuple[int, ...]:
    """``"1,28,28"`` -> ``(1, 28, 28)``."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"input shape must be three positive integers C,H,W, got {text!r}")
    return shape


def _add_user_classifier_flags(p: argparse.ArgumentParser, images: str) -> None:
    """The flags that describe a classifier of your own (a .onnx or .pt2 file, or package.module:factory)."""
    p.add_argument("--resize", action="store_true",
                   help=f"adapt {images} to your classifier's input size and channels")
    p.add_argument("--input-shape", type=_parse_shape, default=None,
                   help="C,H,W your classifier takes, where the model does not fix it")
    p.add_argument("--output", default="auto", choices=OUTPUT_MODES,
                   help="what your classifier returns (default: auto, decided on a probe batch)")
    p.add_argument("--weights", default=None,
                   help="a .safetensors state dict for the module your package.module:factory returns")


def _parse_names(text: str) -> tuple[str, ...]:
    """``"cat,dog"`` -> ``("cat", "dog")``; argparse turns the error into a one-line usage error."""
    names = tuple(n.strip() for n in text.split(","))
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"class names must be two or more distinct, comma-separated names, "
                                         f"got {text!r}")
    return names


def _parse_target(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"target must be comma-separated numbers like 0.5,0.5, got {text!r}")
    return values


def _add_common(p: argparse.ArgumentParser, *, out_default: str | None) -> None:
    p.add_argument("--out", default=out_default, required=out_default is None, help="output folder of the report"
                   + (f" (default: {out_default})" if out_default else ""))
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the audit's, 0)")
    p.add_argument("--method", default=None, choices=METHODS,
                   help=f"sampler (default: the audit's, else {DEFAULT_METHOD}); nuts/svi/hmc need a differentiable classifier")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")
    p.add_argument("--cache-dir", default=None, help="weights cache (default: $PPL_AUDIT_CACHE or ~/.cache/ppl-audit)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_no_train(p)
    _add_executor(p)


def _add_executor(p: argparse.ArgumentParser, units: str = "the audit's independent units (level sets, grid "
                  "points)", file_key: str = "; the audit file's executor") -> None:
    """``--executor`` and ``--ray-address``: where the independent units run (never part of a spec)."""
    from ppl_audit.execute import EXECUTORS

    p.add_argument("--executor", default=None, choices=EXECUTORS,
                   help=f"run {units} in this process (local, the default) or as Ray tasks (ray; "
                        f"pip install -e .[ray]){file_key}")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="the Ray cluster of --executor ray: auto (default: a running cluster, else a local one), "
                        "local, or HOST:PORT of a head node" + ("; the audit file's ray_address" if file_key else ""))


def _add_sampler_overrides(p: argparse.ArgumentParser, *, particles: bool = True) -> None:
    """``--particles`` and ``--sampler-option``: the settings a report's convergence warnings name."""
    if particles:
        p.add_argument("--particles", type=int, default=None,
                       help="particles of every level set (the audit file's num_particles; default: the audit's)")
    p.add_argument("--sampler-option", action="append", default=None, metavar="KEY=VALUE",
                   help="a sampler option, e.g. max_rounds=3 (the audit file's sampler_options); repeatable")


def _sampler_option(text: str) -> tuple[str, Any]:
    """``"max_rounds=3"`` -> ``("max_rounds", 3)``: the value read as a TOML value, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidInputError(f"--sampler-option takes KEY=VALUE, e.g. max_rounds=3, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def _with_overrides(module, spec, args):
    """``spec`` with ``--method``, ``--particles`` and ``--sampler-option`` applied, in one replace so that the
    spec checks them together, as it checks a file's keys."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(spec)}
    changes: dict[str, Any] = {}

    def change(field: str, flag: str, value, hint: str = "") -> None:
        if field not in fields:
            raise InvalidInputError(f"{flag} does not apply to an audit of kind {module.KIND!r}{hint}")
        changes[field] = value

    if args.method is not None:
        change("method", "--method", args.method)
    particles = getattr(args, "particles", None) if args.command != "levelset" else None
    if particles is not None:
        change("num_particles", "--particles", particles,
               "; set num_particles in its parts" if module.KIND == "classifier" else "")
    options = [_sampler_option(text) for text in getattr(args, "sampler_option", None) or []]
    if options:
        change("sampler_options", "--sampler-option", {**dict(getattr(spec, "sampler_options", {})), **dict(options)})
    return dataclasses.replace(spec, **changes) if changes else spec


def _add_no_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-train", action="store_true",
                   help="make a model missing from the cache an error instead of training it first")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="data folder for models that must be trained first (default: the audit's data_dir, "
                        "else $PPL_AUDIT_DATA)")


def build_parser() -> argparse.ArgumentParser:
    """The ``ppl-audit`` argument parser."""
    parser = _OneLineParser(
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
    _add_sampler_overrides(demo)

    ls = sub.add_parser("levelset", help="sample one level set of a built-in world or MNIST prior",
                        description="Sample inputs whose classifier prediction matches --target.")
    ls.add_argument("--world", "--prior", dest="world", default="house-rocket",
                    help="house-rocket, house-rocket-circle, the MNIST decoder priors mnist-vae, mnist-gan, or a "
                         "decoder of your own: a .onnx or .pt2 file, or package.module:factory")
    ls.add_argument("--target", type=_parse_target, required=True,
                    help="target prediction over the classifier's classes: [rocket, house] for house-rocket "
                         "worlds (e.g. 0.5,0.5), digits 0..9 for MNIST priors (ten numbers)")
    ls.add_argument("--name", default="target", help="name of the target in the report")
    ls.add_argument("--concentration", type=float, default=None,
                    help="Dirichlet concentration alpha > 0 (default: 10 on house-rocket worlds, the MNIST "
                         "audit's on MNIST priors)")
    ls.add_argument("--relaxation", default="dirichlet", choices=RELAXATIONS,
                    help="prediction likelihood: the paper's dirichlet, or gaussian Normal(f(x), sigma)")
    ls.add_argument("--sigma", type=float, default=None, help="scale of the gaussian relaxation (default 0.05)")
    ls.add_argument("--particles", type=int, default=1000, help="particles / chains N (default 1000)")
    ls.add_argument("--steps", type=int, default=200, help="steps per chain T for mh/hmc/nuts, optimisation steps for svi (default 200)")
    ls.add_argument("--samples", type=int, default=None, help="samples kept, <= N (default N)")
    ls.add_argument("--classifier", default=None,
                    help="model card name or path (default: house-rocket-cnn, or mnist-lenet5 on MNIST priors), "
                         "or a classifier of your own: a .onnx or .pt2 file, or package.module:factory")
    ls.add_argument("--class-names", type=_parse_names, default=None,
                    help="a classifier of your own's classes, comma-separated, in output order (default: its "
                         "metadata)")
    _add_user_classifier_flags(ls, "the world's images")
    _add_common(ls, out_default=None)
    _add_sampler_overrides(ls, particles=False)
    _add_data_dir(ls)

    run = sub.add_parser("run", help="run a declarative audit file",
                         description="Run an audit file (TOML); a classifier audit's file runs several as one report.")
    run.add_argument("audit_file", help="path to an audit file, e.g. analyses/house-rocket.toml")
    _add_common(run, out_default=None)
    _add_sampler_overrides(run)
    _add_data_dir(run)

    audit = sub.add_parser(
        "audit", help="one report per classifier: an audit file, or flags naming the models",
        description="Run an audit file as `run` does, or, with --classifier instead of a file, every audit "
                    "family the named models allow, into one report: level sets and a graded sweep on the "
                    "priors, calibration on labelled priors, confidently-wrong rates on class mixtures, "
                    "novel-class rates on --novel-prior.")
    audit.add_argument("audit_file", nargs="?", default=None, help="an audit file (or give --classifier)")
    audit.add_argument("--classifier", default=None,
                       help="model card, .onnx or .pt2 file, or package.module:factory to audit")
    audit.add_argument("--class-names", type=_parse_names, default=None,
                       help="a classifier of your own's classes, comma-separated")
    audit.add_argument("--prior", action="append", default=[], metavar="PRIOR",
                       help="a prior (world) to audit on; repeat for several (default: the classifier "
                            "family's)")
    audit.add_argument("--novel-prior", action="append", default=[], metavar="PRIOR",
                       help="a prior of a class the classifier never saw (novel-class audit); repeatable")
    audit.add_argument("--title", default=None, help="the report's title")
    _add_common(audit, out_default=None)
    _add_sampler_overrides(audit)
    _add_data_dir(audit)

    ood = sub.add_parser("ood", help="score a folder of images with the generative-ensemble OoD detectors",
                         description="Score every 28 x 28 grey image of a folder (PNG/JPEG, or .npy/.npz arrays) "
                                     "with the VAE ensemble's WAIC, log-likelihood and rate (and the WGAN critics' "
                                     "D and Var(D) with --gan-ensemble); higher = more out-of-distribution. "
                                     "Percentiles are against MNIST test digits when the data folder has them.")
    ood.add_argument("images", help="folder of images to score")
    ood.add_argument("--ensemble", default="mnist-vae-ensemble", help="VAE-ensemble card (default: %(default)s)")
    ood.add_argument("--gan-ensemble", default="", help="WGAN-ensemble card for the critic columns (default: none)")
    ood.add_argument("--classifier", default="",
                     help="add the column 1 - max p of a classifier: a model card, or one of your own (.onnx, "
                          ".pt2 or package.module:factory)")
    _add_user_classifier_flags(ood, "the 28 x 28 grey images")
    ood.add_argument("--reference", type=int, default=2000,
                     help="MNIST test digits scored as the reference for percentiles (0: none; default %(default)s)")
    ood.add_argument("--out", required=True, help="output folder of the report")
    ood.add_argument("--force", action="store_true", help=FORCE_HELP)
    ood.add_argument("--seed", type=int, default=0, help="seeds the importance samples (default 0)")
    ood.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    ood.add_argument("--cache-dir", default=None, help="weights cache folder")
    ood.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_no_train(ood)
    _add_data_dir(ood)

    train = sub.add_parser("train", help="build a model card's weights into the cache",
                           description="Train the model described by a model card (any registered kind: "
                                       f"{', '.join(_trainable_kinds())}) and store it in the cache; "
                                       "print its metrics and write a training report.")
    train.add_argument("card", help="model card path or name, e.g. models/mnist-vae.toml or mnist-vae")
    train.add_argument("--data-dir", default=None,
                       help="data folder with one sub-folder per dataset (default: $PPL_AUDIT_DATA); "
                            "read only when the weights are not cached yet")
    train.add_argument("--out", default=None,
                       help=f"folder of the training report (default: {DEFAULT_TRAIN_OUT.format(name='NAME')})")
    train.add_argument("--no-report", action="store_true", help="do not write a training report")
    train.add_argument("--force", action="store_true", help=FORCE_HELP)
    train.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")
    train.add_argument("--retrain", action="store_true", help="train even if cached weights exist")
    train.add_argument("--cache-dir", default=None, help="weights cache folder")
    train.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_executor(train, units="the members of an ensemble whose members train apart (gan-ensemble), one unit a "
                  "member, each written into the cache,", file_key="")
    return parser


def _trainable_kinds() -> tuple[str, ...]:
    from ppl_audit.training import registered_kinds

    return registered_kinds()


def _version() -> str:
    from ppl_audit import __version__

    return __version__


def _run_audit(spec, seed, args, progress, settings=None) -> int:
    from ppl_audit.audits import executor_from, run_audit
    from ppl_audit.report import check_output_dir, write_report

    out = check_output_dir(args.out, force=args.force)  # refuse a bad destination before minutes of work
    extra = {"data_dir": args.data_dir} if getattr(args, "data_dir", None) is not None else {}
    with executor_from(settings, args.executor, args.ray_address) as executor:  # connected (or refused) first
        report = run_audit(spec, seed=seed, executor=executor, progress=progress, cache=args.cache_dir, **extra)
    path = write_report(report, out, force=args.force)
    warnings = list(report.iter_warnings())
    if args.quiet:
        print(path)  # --quiet: the result's path is all a script needs, and all that is printed
    else:
        print(f"report written to {path}/report.html ({len(warnings)} warning(s); "
              f"{report.timings.get('total_seconds', 0):.1f} s)", file=sys.stderr)
    return 0


def _expected_text(card, key: str) -> str:
    from ppl_audit.training import EXPECTED_MAX_PREFIX, EXPECTED_MIN_PREFIX

    if EXPECTED_MIN_PREFIX + key in card.expected:
        return f"expected >= {card.expected[EXPECTED_MIN_PREFIX + key]}"
    if EXPECTED_MAX_PREFIX + key in card.expected:
        return f"expected <= {card.expected[EXPECTED_MAX_PREFIX + key]}"
    return "no expectation in the card"


def _train(args, progress) -> int:
    """``ppl-audit train``: load or train a card's model, print its metrics, write its report."""
    from ppl_audit.report import check_output_dir, write_report
    from ppl_audit.report.writers import format_value
    from ppl_audit.audits import executor_from
    from ppl_audit.execute import use_executor
    from ppl_audit.training import as_card, get_trainer, load_model, training_report

    card = as_card(args.card)
    trainer = get_trainer(card.kind)
    out = None
    if not args.no_report:  # refuse a bad destination before minutes of training
        out = check_output_dir(args.out or DEFAULT_TRAIN_OUT.format(name=card.name), force=args.force)
    start = time.perf_counter()
    with executor_from(None, args.executor, args.ray_address) as executor, use_executor(executor):
        trained = load_model(card, cache=args.cache_dir, data_dir=args.data_dir, device=args.device or "auto",
                             progress=progress, retrain=args.retrain)
    elapsed = time.perf_counter() - start
    if progress is not None:
        progress.close()
    key, label = trainer.headline
    value = trained.metrics.get(key, float("nan"))
    print(f"{card.name}: {label} {value:.4f} ({_expected_text(card, key)}), weights {trained.weights_path} "
          f"[{elapsed:.1f} s]")
    others = [f"{k} {format_value(v)}" for k, v in trained.metrics.items()
              if k != key and not isinstance(v, (list, dict))]
    if others:
        print("  " + ", ".join(others))
    if out is not None:
        path = write_report(training_report(trained, data_dir=args.data_dir), out, force=args.force)
        print(f"  training report: {path}/report.html")
    return 0


def _ood(args, progress) -> int:
    from ppl_audit.audits.ood import score_folder
    from ppl_audit.audits.spec import MAX_SEED
    from ppl_audit.report import check_output_dir, write_report

    out = check_output_dir(args.out, force=args.force)
    seed = check_seed(args.seed, "--seed", maximum=MAX_SEED)
    report = score_folder(args.images, vae_ensemble=args.ensemble, gan_ensemble=args.gan_ensemble,
                          num_reference=args.reference, seed=seed, device=args.device, cache=args.cache_dir,
                          data_dir=args.data_dir, progress=progress, classifier=args.classifier, resize=args.resize,
                          classifier_options={"input_shape": args.input_shape, "output": args.output,
                                              "weights": args.weights})
    path = write_report(report, out, force=args.force)
    if args.quiet:
        print(path)
    else:
        print(f"{report.metrics['num_images']} images scored; report written to {path}/report.html", file=sys.stderr)
    return 0


def _audit_from_args(args):
    """``(module, spec, seed, run settings)`` of ``ppl-audit audit``: its file (and where it asks to run), or the
    parts its model flags allow."""
    from ppl_audit.audits import classifier as classifier_audit
    from ppl_audit.audits import audit_file_run_settings, load_audit_file
    from ppl_audit.audits.plan import spec_from_models

    flags = [name for name, value in (("--classifier", args.classifier), ("--class-names", args.class_names),
                                      ("--prior", args.prior), ("--novel-prior", args.novel_prior),
                                      ("--title", args.title)) if value]
    if args.audit_file is not None:
        if flags:
            raise InvalidInputError(f"give an audit file or model flags, not both (got the file and {flags[0]})")
        return (*load_audit_file(args.audit_file), audit_file_run_settings(args.audit_file))
    if args.classifier is None:
        raise InvalidInputError("name an audit file or a classifier (--classifier CARD_OR_FILE)")
    spec = spec_from_models(args.classifier, priors=args.prior, novel_priors=args.novel_prior,
                            class_names=args.class_names, title=args.title)
    return classifier_audit, spec, 0, None


def _command(args, progress) -> int:
    import dataclasses

    from ppl_audit.audits import levelset as levelset_audit
    from ppl_audit.audits.spec import MAX_SEED

    if getattr(args, "device", None) is not None:
        from ppl_audit._device import resolve_device

        resolve_device(args.device)  # an unknown or absent device fails now, not after minutes of work
    if args.command == "train":
        return _train(args, progress)
    if args.command == "ood":
        return _ood(args, progress)
    settings = None  # where an audit file asks to run
    if args.command == "audit":
        module, spec, seed, settings = _audit_from_args(args)
    elif args.command == "run":
        from ppl_audit.audits import audit_file_run_settings, load_audit_file

        module, spec, seed = load_audit_file(args.audit_file)
        settings = audit_file_run_settings(args.audit_file)
    elif args.command == "demo":
        module, spec, seed = levelset_audit, levelset_audit.LevelSetAuditSpec(), 0
    else:  # levelset
        from ppl_audit.audits.worlds import world_family

        concentration = args.concentration
        if concentration is None:
            concentration = levelset_audit.DEFAULT_CONCENTRATION[world_family(args.world)]
        target = levelset_audit.TargetSpec(args.name, args.target, concentration, args.relaxation, args.sigma)
        spec = levelset_audit.LevelSetAuditSpec(
            title=f"Level set '{args.name}' on {args.world}",
            worlds=(args.world,),
            targets=(target,),
            num_particles=args.particles,
            num_steps=args.steps,
            num_samples=args.samples if args.samples is not None else args.particles,
            classifier=args.classifier,
            classes=args.class_names,
            resize=args.resize,
            input_shape=args.input_shape,
            output=args.output,
            weights=args.weights,
        )
        module, seed = levelset_audit, 0
    if args.device is not None:
        spec = dataclasses.replace(spec, device=args.device)
    spec = _with_overrides(module, spec, args)
    if args.seed is not None:
        seed = check_seed(args.seed, "--seed", maximum=MAX_SEED)
    return _run_audit(spec, seed, args, progress, settings)


def _training_notices(args):
    """The hook that states, before a model trains, what it is and how long it takes here (or refuses).

    The notice is kept under ``--quiet``: ``--quiet`` silences progress that repeats, but a model
    training for minutes that the user did not ask for is the one thing a quiet run must still say,
    once, on stderr (stdout keeps only the report's path for scripts), with the way to avoid it.
    ``train --quiet`` has none: there the training is what was asked for.
    """
    from ppl_audit.classifiers.external import is_model_source
    from ppl_audit.training.cost import cost_notices

    if args.command == "train" and args.quiet:  # training is what `train` was asked to do: quiet means quiet
        return None
    planned, hints = [], {}
    if args.command == "ood":  # its models are known from the flags: the first notice names them all
        planned = [args.ensemble]
        hints[args.ensemble] = "--ensemble names another VAE-ensemble card (the likelihood columns need one)"
        if args.gan_ensemble:
            planned.append(args.gan_ensemble)
            hints[args.gan_ensemble] = "leave out --gan-ensemble (only the critic columns need it)"
        if args.classifier and not is_model_source(args.classifier):
            planned.append(args.classifier)
            hints[args.classifier] = "leave out --classifier (only the 1 - max p column needs it)"
    return cost_notices(lambda line: print(line, file=sys.stderr, flush=True),
                        refuse=getattr(args, "no_train", False), hints=hints, planned=planned,
                        way_out=args.command != "train")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ppl-audit`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING,
                        format="ppl-audit: warning: %(message)s", stream=sys.stderr)
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR if args.quiet else logging.WARNING)  # basicConfig sets it once only
    # Libraries' warnings become log lines ("ppl-audit: warning: ..."): silent under --quiet, one line otherwise.
    logging.captureWarnings(True)
    progress = None if args.quiet else _Progress()
    try:
        from ppl_audit.training import before_training

        with before_training(_training_notices(args)):
            return _command(args, progress)
    except PplAuditError as exc:
        print(f"ppl-audit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ppl-audit: interrupted", file=sys.stderr)
        return 130
    finally:
        logging.captureWarnings(False)
        logging.getLogger().setLevel(root_level)
        if progress is not None:
            progress.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = [
    "DEFAULT_DEMO_OUT",
    "DEFAULT_TRAIN_OUT",
    "EXIT_USAGE",
    "FORCE_HELP",
    "build_parser",
    "main",
]
