"""Re-run one representative input of every class of issue 20 through the real command line.

Issue 20 ("Inputs that cannot break it") listed classes of hostile input that
gave tracebacks, lost data, escaped their folders or failed minutes late. This
script runs one input of each class as a user would: ``python -m ppl_audit ...``
in a subprocess, in a temporary folder, with a temporary weights cache
(``--cache-dir`` and ``$PPL_AUDIT_CACHE``; the real cache is never touched).
For every case it records the exit status, the seconds to exit (including
starting Python and importing torch, measured once as ``import_seconds``), the number of
stderr lines (progress bars, which clear themselves, are not lines), whether a
traceback appeared, the first stderr line, and whether the expectation held:

- ``error``: exit 2, exactly one line ``ppl-audit: error: ...``, no traceback;
- ``kept``: the user's files in the --out folder are intact (and no traceback);
- ``healed``: exit 0, exactly one ``ppl-audit: warning:`` line saying the entry
  is rebuilt, and a valid cache entry afterwards;
- ``accepted``: exit 0, no traceback;
- ``quiet``: exit 0, nothing on stderr, only the result's path on stdout.

Cases that need a trained model train tiny ones first (a house/rocket
classifier on 1,000 renders, a two-member VAE ensemble on the 100 committed
MNIST test images) into the temporary cache; their cards carry ``[expected]``
floors such tiny models clear.

Run:  python benchmarks/hostile_inputs.py [--quick] [--out PATH]
Writes benchmarks/results/hostile_inputs.json (``--quick``: a handful of cases
that need no trained model, written only with --out).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from _common import parse, parser, print_table, write_results

SCHEMA_VERSION = 1
SEED = 0  # the seed every level-set case passes (--seed); the tiny cards train with seed 0
REPO = Path(__file__).resolve().parents[1]
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"  # 100 MNIST test digits, committed
CASE_TIMEOUT_SECONDS = 300  # a case still running then is recorded as a hang (exit None)
EXIT_USAGE = 2
DEVICES = ("mps", "xpu", "hip", "vulkan", "ipu", "xla", "meta")
TINY_HOUSE_ROCKET = {  # 1,000 renders, 2 epochs: ~90% accuracy in seconds; a floor it clears
    ("data", "num_train"): "1000", ("data", "num_test"): "300", ("training", "epochs"): "2",
    ("training", "batch_size"): "64", ("expected", "min_test_accuracy"): "0.7",
}
TINY_ENSEMBLE = {"architecture": {"members": 2, "latent_dim": 3, "hidden": [16]},
                 "data": {"train_split": "test", "num_train": 100, "num_test": 100},
                 "training": {"epochs": 1, "batch_size": 25},
                 "expected": {"min_test_log_likelihood_nats": -1000}}  # untrained: about -784 ln 2 = -543 nats
MAX_FIRST_LINE = 160  # characters of the first stderr line kept in the table and the JSON


@dataclass
class Case:
    """One hostile input: ``argv(folder)`` run in ``folder`` after ``prepare(folder)``."""

    cls: str
    name: str
    argv: Callable[[Path], list]
    expect: str = "error"
    prepare: Callable[[Path], None] | None = None
    check: Callable[[Path, "Outcome"], bool] | None = None  # an extra condition of the expectation
    quick: bool = False
    needs: tuple[str, ...] = ()  # "classifier", "ensemble": tiny models trained before the case


@dataclass
class Outcome:
    status: int | None
    seconds: float
    stdout: str
    stderr: str
    lines: list[str] = field(default_factory=list)


PROGRESS_BAR = re.compile(r"\d+%\|.*\|")  # a tqdm bar (``task:  40%|####  | 2/5 [...]``): progress, not a message


def stderr_lines(text: str) -> list[str]:
    """The messages on stderr: non-empty lines that are not progress bars (the last redraw of a line counts)."""
    lines = []
    for raw in text.split("\n"):
        shown = raw.split("\r")[-1].strip()
        if shown and not PROGRESS_BAR.search(shown):
            lines.append(shown)
    return lines


class World:
    """The temporary folder, cache and cards every case shares."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "cache"
        self.cards = root / "cards"
        self.cards.mkdir()
        self.card = self.write_card("hr-tiny")
        self.ensemble = self.cards / "ens-tiny.toml"
        from ppl_audit.cards import load_card

        self.ensemble.write_text(load_card("mnist-vae-ensemble").with_overrides(**TINY_ENSEMBLE).to_toml())
        self.env = {k: v for k, v in os.environ.items() if k not in ("PPL_AUDIT_DATA",)}
        self.env.update(PPL_AUDIT_CACHE=str(self.cache), PYTHONWARNINGS="default")
        self.trained: dict[str, float] = {}

    def card_text(self, name: str = "hr-tiny", **edits: str) -> str:
        """The shipped house/rocket card with tiny sizes, a new name and ``KEY=value`` edits (TOML values)."""
        from ppl_audit.cards import _shipped_card

        text = _shipped_card("house-rocket-cnn").replace('name = "house-rocket-cnn"', f'name = "{name}"')
        values = {key: value for (_, key), value in TINY_HOUSE_ROCKET.items()} | edits
        for key, value in values.items():
            text, count = re.subn(rf"(?m)^{key} = [^#\n]*", lambda _: f"{key} = {value}  ", text)
            assert count == 1, key
        return text

    def write_card(self, name: str, file: str | None = None, **edits: str) -> Path:
        path = self.cards / f"{file or name}.toml"
        path.write_text(self.card_text(name, **edits))
        return path

    def levelset(self, folder: Path, *extra, card: Path | None = None, cache: Path | None = None) -> list:
        """A tiny level-set run: 16 particles, 4 MH steps, on the CPU."""
        return ["levelset", "--target", "0.5,0.5", "--classifier", card or self.card, "--particles", "16",
                "--steps", "4", "--method", "mh", "--device", "cpu", "--seed", str(SEED),
                "--cache-dir", cache or self.cache, *extra]

    def run(self, argv: list, folder: Path, timeout: float = CASE_TIMEOUT_SECONDS) -> Outcome:
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "ppl_audit", *map(str, argv)], cwd=folder, env=self.env,
                                  capture_output=True, text=True, timeout=timeout)
            status, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            status, out, err = None, _text(exc.stdout), _text(exc.stderr) + f"\n(no exit within {timeout:.0f} s)"
        seconds = time.perf_counter() - start
        return Outcome(status, seconds, out, err, stderr_lines(err))

    def train(self, what: str) -> None:
        """Train a tiny model into the shared cache once (``classifier`` or ``ensemble``)."""
        if what in self.trained:
            return
        folder = self.root / f"setup-{what}"
        folder.mkdir()
        if what == "classifier":
            argv = ["train", self.card, "--cache-dir", self.cache, "--device", "cpu", "--no-report", "--quiet"]
        else:
            argv = ["train", self.ensemble, "--data-dir", FIXTURE_DATA, "--cache-dir", self.cache, "--device", "cpu",
                    "--no-report", "--quiet"]
        outcome = self.run(argv, folder)
        if outcome.status != 0:
            raise SystemExit(f"setup: training the tiny {what} failed:\n{outcome.stderr}")
        self.trained[what] = outcome.seconds

    def weights(self, cache: Path | None = None) -> Path:
        """The tiny classifier's weights file in ``cache``."""
        from ppl_audit.cards import load_card

        return load_card(self.card).cache_path(cache or self.cache)

    def cache_copy(self, folder: Path) -> Path:
        """A private copy of the shared cache for a case that damages it."""
        copy = folder / "cache"
        shutil.copytree(self.cache, copy)
        return copy


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


# --------------------------------------------------------------------------- expectations


def held(case: Case, outcome: Outcome, folder: Path) -> bool:
    no_traceback = "Traceback" not in outcome.stderr and outcome.status is not None
    if case.expect == "error":
        ok = (outcome.status == EXIT_USAGE and len(outcome.lines) == 1
              and outcome.lines[0].startswith("ppl-audit: error: "))
    elif case.expect == "kept":
        ok = True  # the case's check looks at the user's files
    elif case.expect == "healed":
        warnings = [line for line in outcome.lines if line.startswith("ppl-audit: warning:")]
        ok = outcome.status == 0 and len(warnings) == 1 and "rebuild" in warnings[0]
    elif case.expect == "accepted":
        ok = outcome.status == 0
    elif case.expect == "quiet":
        ok = outcome.status == 0 and outcome.stderr == "" and len(outcome.stdout.splitlines()) == 1
    else:
        raise ValueError(f"unknown expectation {case.expect!r}")
    return bool(ok and no_traceback and (case.check is None or case.check(folder, outcome)))


USER_FILES = {"src/main.py": "print('my work')\n", "thesis.tex": "\\documentclass{article}\n"}


def _user_folder(folder: Path, report_json: bool = True) -> None:
    out = folder / "OUT"
    for name, text in USER_FILES.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    if report_json:
        (out / "report.json").write_text(json.dumps({"schema_version": 1, "kind": "levelset"}))


def _user_files_intact(folder: Path, _outcome=None) -> bool:
    return all((folder / "OUT" / name).is_file() and (folder / "OUT" / name).read_text() == text
               for name, text in USER_FILES.items())


def _nothing_outside(folder: Path, outcome: Outcome) -> bool:
    """No weights anywhere in the case's folder, and nothing where ``../../../../elsewhere`` would lead."""
    escaped = (folder / "cache" / "../../../../elsewhere").resolve()
    return not escaped.exists() and not list(folder.rglob("*.safetensors")) and not (folder / "abs").exists()


# --------------------------------------------------------------------------- the cases


def _png_bomb(path: Path, side: int = 100_000) -> None:
    """A valid-looking PNG header claiming ``side`` x ``side`` grey pixels (10 gigapixels), a few bytes long."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _huge_npy(path: Path) -> None:
    """A .npy whose header claims a (25e9, 28, 28) float32 array, about 71 TiB, followed by 16 bytes."""
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (25_000_000_000, 28, 28)})
        fh.write(b"\0" * 16)


def _images_folder(folder: Path, files: dict[str, Callable[[Path], None]]) -> None:
    images = folder / "images"
    images.mkdir()
    for name, write in files.items():
        write(images / name)


def _npz_truncated(path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, images=np.random.default_rng(SEED).random((4, 28, 28), dtype=np.float32))
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])


def _digits(path: Path) -> None:
    with path.open("wb") as fh:  # np.save would append ".npy" to an upper-case name
        np.save(fh, np.load(REPO / "tests" / "fixtures" / "ood-images" / "mnist-digits.npy")[:3])


def _edit_sidecar(cache: Path, weights: Path, edit: Callable[[dict], None]) -> None:
    sidecar = weights.with_suffix(".json")
    doc = json.loads(sidecar.read_text())
    edit(doc)
    sidecar.write_text(json.dumps(doc))


def _healed(world: World) -> Callable[[Path, Outcome], bool]:
    """The case's cache entry verifies again and records the card's recipe and plausible metrics."""
    def check(folder: Path, _outcome: Outcome) -> bool:
        from ppl_audit.cache import check_sidecar_info, load_weights
        from ppl_audit.cards import load_card

        weights = world.weights(folder / "cache")
        try:
            _, info = load_weights(weights)
            check_sidecar_info(info, load_card(world.card).recipe_hash, weights)
        except Exception:  # noqa: BLE001 - any failure means not healed
            return False
        leftovers = [p.name for p in (folder / "cache").iterdir() if p.name.startswith(".")]
        return not leftovers

    return check


def cases(world: World) -> list[Case]:
    w = world
    out = ["--out", "OUT"]
    L = w.levelset
    result: list[Case] = []

    def add(*args, **kwargs):
        result.append(Case(*args, **kwargs))

    # data loss: --out over a folder the tool did not mark as its own
    add("data loss", "--out over report.json + user files", lambda f: L(f, *out), "kept",
        prepare=_user_folder, check=lambda f, o: _user_files_intact(f) and o.status == EXIT_USAGE, quick=True)
    # --force writes beside the user's files but never over them: a foreign report.json is refused
    add("data loss", "--out over report.json + user files, --force", lambda f: L(f, *out, "--force"), "kept",
        prepare=_user_folder, check=lambda f, o: _user_files_intact(f) and o.status == EXIT_USAGE and len(o.lines) == 1)
    add("data loss", "--out over user files, --force", lambda f: L(f, *out, "--force", "--quiet"), "kept",
        prepare=lambda f: _user_folder(f, report_json=False), needs=("classifier",),
        check=lambda f, o: _user_files_intact(f) and o.status == 0 and (f / "OUT" / "report.json").is_file())

    def old_report_with_a_note(folder: Path) -> None:
        first = w.run(L(folder, *out, "--quiet"), folder)
        assert first.status == 0, first.stderr
        (folder / "OUT" / "notes.txt").write_text("the user's note\n")

    add("data loss", "a file the user added to an old report folder", lambda f: L(f, *out, "--quiet"), "kept",
        prepare=old_report_with_a_note, needs=("classifier",),
        check=lambda f, o: (f / "OUT" / "notes.txt").is_file() and (o.status == 0 or len(o.lines) == 1))

    # path escape: a card's [model] name is a file name in the cache
    def escape_card(name: str) -> Callable[[Path], None]:
        return lambda f: (f / "card.toml").write_text(w.card_text(name))

    add("path escape", 'card name "../../../../elsewhere/hr"',
        lambda f: ["train", "card.toml", "--cache-dir", f / "cache"], prepare=escape_card("../../../../elsewhere/hr"),
        check=_nothing_outside, quick=True)
    add("path escape", "card name an absolute path",
        lambda f: ["train", "card.toml", "--cache-dir", f / "cache"], prepare=lambda f: escape_card(str(f / "abs"))(f),
        check=_nothing_outside)
    add("path escape", 'target --name "../../x"', lambda f: L(f, "--name", "../../x", *out))

    # late failures: a bad destination is refused before any work
    add("late failure", "--out under /proc", lambda f: L(f, "--out", "/proc/ppl-audit-out"))
    add("late failure", "--out under an existing file", lambda f: L(f, "--out", "file/OUT"),
        prepare=lambda f: (f / "file").write_text("x"))

    def read_only(folder: Path) -> None:
        (folder / "ro").mkdir()
        (folder / "ro").chmod(0o555)

    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    # root writes into a read-only folder, so there it is no error; the case then checks it runs cleanly
    add("late failure", "--out in a read-only folder" + (" (as root: writable)" if as_root else ""),
        lambda f: L(f, "--out", "ro/OUT", *(["--quiet"] if as_root else [])), "quiet" if as_root else "error",
        prepare=read_only, needs=("classifier",) if as_root else ())
    add("late failure", "--out with a 300-character name", lambda f: L(f, "--out", "a" * 300))
    add("late failure", "--cache-dir a file (train a new recipe)",
        lambda f: ["train", w.write_card("hr-fresh", epochs="3"), "--cache-dir", f / "file", "--no-report"],
        prepare=lambda f: (f / "file").write_text("x"))
    add("late failure", "--cache-dir a file (levelset)", lambda f: L(f, *out, cache=f / "file"),
        prepare=lambda f: (f / "file").write_text("x"))
    if not torch.cuda.is_available():
        add("late failure", "train --device cuda without CUDA",
            lambda f: ["train", w.write_card("hr-cuda", epochs="4"), "--device", "cuda", "--cache-dir", f / "cache",
                       "--no-report"], check=lambda f, o: not (f / "cache").exists())

    # devices
    for device in DEVICES:
        add("device", f"levelset --device {device}", lambda f, d=device: [*L(f, *out), "--device", d],
            quick=device == "meta")
    add("device", "audit file device = \"xpu\"", lambda f: ["run", "audit.toml", *out],
        prepare=lambda f: (f / "audit.toml").write_text(_audit(w, device="xpu")))
    add("device", "train --device mps", lambda f: ["train", w.card, "--device", "mps", "--cache-dir", f / "cache",
                                                   "--no-report"])

    # numeric extremes
    for value in ("1e300", "1e-300", "1e10"):
        add("numeric extreme", f"--concentration {value}", lambda f, v=value: L(f, "--concentration", v, *out))
    add("numeric extreme", "--target 1e-50,0.9999999999999",
        lambda f: [a if a != "0.5,0.5" else "1e-50,0.9999999999999" for a in map(str, L(f, *out))])
    add("numeric extreme", "--relaxation gaussian --sigma 1e-300",
        lambda f: L(f, "--relaxation", "gaussian", "--sigma", "1e-300", *out))
    add("numeric extreme", "--particles 10**12", lambda f: [*L(f, *out), "--particles", str(10**12)])
    add("numeric extreme", "num_prior_samples = 2**63-1", lambda f: ["run", "audit.toml", *out],
        prepare=lambda f: (f / "audit.toml").write_text(_audit(w, num_prior_samples=2**63 - 1)))
    add("numeric extreme", "--steps 10**12", lambda f: [*L(f, *out), "--steps", str(10**12)])
    add("numeric extreme", "--seed 2**64", lambda f: [*L(f, *out), "--seed", str(2**64)])

    # audit files and model cards
    add("audit file / card", "TOML nested 1,000 deep", lambda f: ["run", "deep.toml", *out],
        prepare=lambda f: (f / "deep.toml").write_text("a = " + "[" * 1000 + "]" * 1000 + "\n"))
    add("audit file / card", "audit data_dir = 5", lambda f: ["run", "audit.toml", *out],
        prepare=lambda f: (f / "audit.toml").write_text(_audit(w, data_dir=5)))
    add("audit file / card", "audit classifier = 5", lambda f: ["run", "audit.toml", *out],
        prepare=lambda f: (f / "audit.toml").write_text(_audit(w, classifier=5)))
    add("audit file / card", "a binary card", lambda f: ["train", "card.toml", "--cache-dir", f / "cache"],
        prepare=lambda f: (f / "card.toml").write_bytes(bytes(range(256)) * 4))
    for key, value in (("channels", '"abc"'), ("num_train", "inf"), ("channels", "1000000"),
                       ("min_test_accuracy", '"high"'), ("learning_rate", "inf")):
        add("audit file / card", f"card {key} = {value}",
            lambda f, k=key, v=value: ["train", "card.toml", "--cache-dir", f / "cache", "--no-report"],
            prepare=lambda f, k=key, v=value: (f / "card.toml").write_text(w.card_text("hr-bad", **{k: v})),
            check=lambda f, o: not (f / "cache").exists() or not list((f / "cache").iterdir()))
    add("audit file / card", "card expected = 5 (not a table)",
        lambda f: ["train", "card.toml", "--cache-dir", f / "cache", "--no-report"],
        prepare=lambda f: (f / "card.toml").write_text(
            "expected = 5\n" + w.card_text("hr-bad").split("[expected]")[0]))
    add("audit file / card", "training below the card's [expected] floor (0.999)",
        lambda f: ["train", "card.toml", "--cache-dir", f / "cache", "--device", "cpu", *out],
        prepare=lambda f: (f / "card.toml").write_text(
            w.card_text("hr-floor", num_train="200", epochs="1", min_test_accuracy="0.999")),
        check=lambda f, o: (not (f / "cache").exists() or not list((f / "cache").iterdir()))
        and not (f / "OUT").exists() and "min_test_accuracy 0.999" in o.lines[0])

    # cache healing: each case damages a private copy of the cache, then a level-set run must rebuild it
    def damaged(damage: Callable[[Path, Path], None]) -> Callable[[Path], None]:
        def prepare(folder: Path) -> None:
            cache = w.cache_copy(folder)
            damage(cache, w.weights(cache))
        return prepare

    heal_argv = lambda f: L(f, *out, cache=f / "cache")  # noqa: E731
    for name, damage in (
        ("sidecar sha256 = 5", lambda c, p: _edit_sidecar(c, p, lambda d: d.update(sha256=5))),
        ("sidecar info a string", lambda c, p: _edit_sidecar(c, p, lambda d: d.update(info="text"))),
        ("sidecar recipe_hash edited",
         lambda c, p: _edit_sidecar(c, p, lambda d: d["info"].update(recipe_hash="0" * 16))),
        ("sidecar test_accuracy = 1.5",
         lambda c, p: _edit_sidecar(c, p, lambda d: d["info"]["metrics"].update(test_accuracy=1.5))),
        ("a killed write's temporary + corrupt weights",
         lambda c, p: ((c / f".{p.name}.tmp-{_dead_pid()}-abc").write_bytes(b"half"),
                       p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8))),
    ):
        add("cache healing", name, heal_argv, "healed", prepare=damaged(damage), check=_healed(w),
            needs=("classifier",))

    def directory_in_place(cache: Path, weights: Path) -> None:
        weights.unlink()
        (weights / "user-file").parent.mkdir()
        (weights / "user-file").write_text("kept")

    # a folder is not the tool's to delete: refused with one line naming it, its content kept
    add("cache healing", "a directory where the weights file belongs (refused, kept)", heal_argv,
        prepare=damaged(directory_in_place), needs=("classifier",),
        check=lambda f, o: (w.weights(f / "cache") / "user-file").is_file())

    # ood folders: every file is read (and refused) before any model is loaded
    ood = lambda f: ["ood", "images", "--ensemble", w.ensemble, "--reference", "0", "--data-dir",  # noqa: E731
                     FIXTURE_DATA, "--cache-dir", w.cache, "--device", "cpu", *out]
    add("ood folder", "zero-byte a.npy", ood,
        prepare=lambda f: _images_folder(f, {"a.npy": lambda p: p.write_bytes(b"")}))
    add("ood folder", "truncated a.npz", ood, prepare=lambda f: _images_folder(f, {"a.npz": _npz_truncated}))
    add("ood folder", "upper-case A.NPY (3 digits)", lambda f: [*ood(f), "--quiet"], "accepted",
        prepare=lambda f: _images_folder(f, {"A.NPY": _digits}), needs=("ensemble",),
        check=lambda f, o: json.loads((f / "OUT" / "report.json").read_text())["metrics"]["num_images"] == 3)
    add("ood folder", "PNG decompression bomb (100,000 x 100,000)", ood,
        prepare=lambda f: _images_folder(f, {"bomb.png": _png_bomb}))
    add("ood folder", ".npy header claiming 71 TiB", ood, prepare=lambda f: _images_folder(f, {"huge.npy": _huge_npy}))

    # output hygiene
    add("argparse", "levelset --target a,b", lambda f: ["levelset", "--target", "a,b", *out], quick=True)
    add("argparse", "an unknown sub-command", lambda f: ["bogus"])
    add("argparse", "levelset --particles many", lambda f: L(f, *out, "--particles", "many"))
    add("quiet", "levelset --quiet (mh, 2 steps: ArviZ would warn)",
        lambda f: [*L(f, *out, "--quiet"), "--steps", "2"], "quiet", needs=("classifier",),
        check=lambda f, o: Path(o.stdout.strip()) == (f / "OUT").resolve() and (f / "OUT" / "report.json").is_file())
    return result


def _dead_pid() -> int:
    """The pid of a process that has exited (a killed writer's)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _audit(world: World, **keys) -> str:
    """A tiny level-set audit file on the tiny classifier, with ``keys`` set (or overridden) in [audit]."""
    values = {"kind": "levelset", "title": "hostile", "seed": SEED, "worlds": ["house-rocket"],
              "classifier": world.card.as_posix(), "num_particles": 16, "num_steps": 4, "num_samples": 16,
              "num_prior_samples": 50, "device": "cpu"} | keys
    lines = ["[audit]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + '\n\n[[targets]]\nname = "ambiguous"\nprobabilities = [0.5, 0.5]\nconcentration = 10.0\n'


# --------------------------------------------------------------------------- main


COLUMNS = ["class", "input", "expect", "exit", "seconds", "stderr_lines", "traceback", "held", "first_stderr_line"]


def main(argv: list[str] | None = None) -> int:
    p = parser(__file__, __doc__, seeds=(SEED,))
    p.add_argument("--only", help="run only the cases whose input contains this text (debugging)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and print stderr (debugging)")
    args = parse(p, argv)
    rows = []
    keep = contextlib.nullcontext(tempfile.mkdtemp(prefix="hostile-")) if args.keep else None
    with keep or tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        world = World(Path(tmp))
        start = time.perf_counter()  # the floor under every row: starting Python and importing torch and Pyro
        subprocess.run([sys.executable, "-c", "import torch, pyro, ppl_audit.cli"], env=world.env, check=True)
        import_seconds = time.perf_counter() - start
        selected = [c for c in cases(world) if (c.quick or not args.quick) and (args.only or "") in c.name]
        for number, case in enumerate(selected):
            for model in case.needs:
                world.train(model)
            folder = world.root / f"case-{number:02d}"
            folder.mkdir()
            if case.prepare is not None:
                case.prepare(folder)
            outcome = world.run(case.argv(folder), folder)
            ok = held(case, outcome, folder)
            first = outcome.lines[0][:MAX_FIRST_LINE] if outcome.lines else ""
            rows.append([case.cls, case.name, case.expect, outcome.status, round(outcome.seconds, 2),
                         len(outcome.lines), "Traceback" in outcome.stderr, ok, first])
            print(f"[{number + 1}/{len(selected)}] {case.cls}: {case.name}: exit {outcome.status} "
                  f"in {outcome.seconds:.1f} s, {'held' if ok else 'DID NOT HOLD: ' + first}", flush=True)
            if args.keep:
                print(f"  {folder}\n  stdout: {outcome.stdout!r}\n  stderr: {outcome.stderr[-3000:]}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        setup = {f"train_tiny_{k}_seconds": round(v, 2) for k, v in world.trained.items()}
        setup["import_seconds"] = round(import_seconds, 2)
    print()
    print_table(COLUMNS, rows)
    errors = [r for r in rows if r[2] == "error"]
    summary = {"cases": len(rows), "held": sum(r[7] for r in rows), "all_held": all(r[7] for r in rows),
               "max_seconds_to_error": max((r[4] for r in errors), default=None),
               "tracebacks": sum(r[6] for r in rows)}
    print(f"\n{summary['cases']} cases, {summary['held']} held (all held: {summary['all_held']}); "
          f"max seconds to an error: {summary['max_seconds_to_error']} (starting Python and importing torch: "
          f"{setup['import_seconds']} s); tracebacks: {summary['tracebacks']}")
    write_results(args, {"benchmark": "hostile_inputs", "seed": SEED, "setup": setup, "summary": summary,
                         "columns": COLUMNS, "rows": rows})
    return 0 if summary["all_held"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
