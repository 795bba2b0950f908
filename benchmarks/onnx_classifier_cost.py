"""What a user's ONNX classifier costs per level-set evaluation against the same network run natively in torch.

The network is the house/rocket-sized :class:`ppl_audit.classifiers.cnn.PatchCNN` (2 classes, 16 channels,
64 hidden, 64x64 inputs), randomly initialised with the seed. ``torch`` times
:class:`~ppl_audit.classifiers.cnn.TorchClassifier.probs` under ``no_grad`` (how a gradient-free sampler
calls it); ``onnx`` exports the same module with ``torch.onnx.export`` and times the
:func:`~ppl_audit.classifiers.external.load_classifier_file` classifier's ``probs`` (onnxruntime on the CPU,
as many threads as torch, the same 256-image chunks, its output checked on every call). The issue's bar:
onnx <= 1.5 x torch, batched. Rows are the best of ``--repeats``.

Run (from the repository root):
      .venv/bin/python benchmarks/onnx_classifier_cost.py          # results/onnx_classifier_cost.json
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
from pathlib import Path

import torch

from _common import best_time, one_seed, parse, parser, print_table, set_threads, skip, write_results

from ppl_audit.classifiers.cnn import PatchCNN, TorchClassifier
from ppl_audit.classifiers.external import load_classifier_file

GOAL_RATIO = 1.5  # the bar
CLASS_NAMES = ("rocket", "house")
QUICK = {"batch_sizes": [8, 32], "repeats": 1}


def main(argv=None) -> int:
    p = parser(__file__, __doc__)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 4096])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = parse(p, argv)
    seed = one_seed(args)
    set_threads(args.threads)
    if not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        return skip(args, "onnx and onnxruntime are not installed (pip install -e .[onnx])")
    if args.quick:
        args.batch_sizes, args.repeats = QUICK["batch_sizes"], QUICK["repeats"]
    torch.manual_seed(seed)
    module = PatchCNN(2, channels=16, hidden=64).eval()
    native = TorchClassifier(module, CLASS_NAMES)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "patch_cnn.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(2, 1, 64, 64),), str(path), input_names=["x"], dynamo=False,
                              dynamic_axes={"x": {0: "n"}})
        external = load_classifier_file(path, class_names=CLASS_NAMES)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n in args.batch_sizes:
        x = torch.rand(n, 1, 64, 64, generator=generator)
        with torch.no_grad():
            gap = float((native.probs(x) - external.probs(x)).abs().max())
            t_torch = best_time(lambda: native.probs(x), args.repeats)
            t_onnx = best_time(lambda: external.probs(x), args.repeats)
        ratio = t_onnx / t_torch
        rows.append({"batch": n, "torch_seconds": round(t_torch, 4), "onnx_seconds": round(t_onnx, 4),
                     "ratio": round(ratio, 3), "meets_goal": bool(ratio <= GOAL_RATIO),
                     "max_probability_gap": gap})
    print(f"PatchCNN(2, channels=16, hidden=64) on 64x64 images, best of {args.repeats} "
          f"(torch threads {torch.get_num_threads()})")
    print_table(["batch", "torch s", "onnx s", "onnx / torch", f"<= {GOAL_RATIO:g}x", "max |dp|"],
                [[r["batch"], r["torch_seconds"], r["onnx_seconds"], r["ratio"], r["meets_goal"],
                  r["max_probability_gap"]] for r in rows])
    write_results(args, {"seed": seed, "repeats": args.repeats, "goal_ratio": GOAL_RATIO, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
