"""How much the Omniglot row of the OoD table depends on how Omniglot is brought to 28 x 28.

The staged Omniglot subset (``../shared/data/omniglot``) is the 105 x 105
ink masks resized to 28 x 28 by nearest neighbour: thin binary strokes,
often broken. The file also keeps the original masks, so other resizings can
be made from them. This script scores the same 2,000 characters (the first
2,000, as ``analyses/mnist-ood.toml`` uses) against the 10,000 MNIST test
digits with the OoD audit's detectors and ensembles, once per resizing:

* ``nearest`` -- the staged images (what the audit reads);
* ``area`` -- each 28 x 28 pixel the mean of the 105 x 105 pixels it covers
  (grey, anti-aliased edges);
* ``bilinear-antialias`` -- ``torch.nn.functional.interpolate(mode="bilinear",
  antialias=True)``, as PIL-style resizing does;
* ``mnist-style`` -- MNIST's own normalisation of the NIST digits: the ink's
  bounding box scaled (area) so its longer side is 20 pixels, aspect ratio
  kept, then placed in 28 x 28 with its centre of mass at the centre (LeCun
  et al.'s description of MNIST);
* ``canvas-in-20-box`` -- the whole 105 x 105 canvas scaled (area) to 20 x 20
  and padded to 28 x 28: characters come out smaller than MNIST digits.

None of these was used to pick anything: the audit keeps the staged images.
The point is how far the Omniglot figure moves with a preprocessing choice
the paper does not fix, which bears on comparing it with the paper's 100.

Run (from the repository root; ~2 minutes with the ensembles cached):
      .venv/bin/python experiments/ood_omniglot_resizing.py --data-dir ../shared/data  # results/ood_omniglot_resizing.json
Exits with status 2 when the data or the ensembles are missing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


from _common import parse, parser as cli, print_table, write_results
from _ood_models import column_aurocs, load_ood_models, model_cards

from ppl_audit.errors import PplAuditError

SIDE, BOX = 28, 20  # MNIST's image side, and the box its digits' longer side is scaled to


def full_resolution_masks(data_dir: str, limit: int) -> torch.Tensor:
    """``(limit, 105, 105)`` float ink masks from the staged file's bit-packed originals."""
    import numpy as np

    from ppl_audit.data.readers import read_npz

    packed = read_npz(Path(data_dir) / "omniglot" / "omniglot_bgsmall_28.npz", "full_res_packed")[:limit]
    return torch.from_numpy(np.unpackbits(packed, axis=-1)[..., :105].astype(np.float32))


def mnist_style(mask: torch.Tensor) -> torch.Tensor:
    """One ``(105, 105)`` mask normalised as MNIST's digits were: 20-pixel box, centre of mass at the centre."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    nh, nw = max(1, round(h * BOX / max(h, w))), max(1, round(w * BOX / max(h, w)))
    small = F.interpolate(crop[None, None], size=(nh, nw), mode="area")[0, 0]
    mass = small.sum()
    cy = float((small.sum(1) * torch.arange(nh)).sum() / mass)
    cx = float((small.sum(0) * torch.arange(nw)).sum() / mass)
    canvas = torch.zeros(SIDE + 2 * BOX, SIDE + 2 * BOX)  # margins, so a far-off centre of mass never clips
    top, left = BOX + round((SIDE - 1) / 2 - cy), BOX + round((SIDE - 1) / 2 - cx)
    canvas[top:top + nh, left:left + nw] = small
    return canvas[BOX:BOX + SIDE, BOX:BOX + SIDE]


def resizings(masks: torch.Tensor, staged: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{name: (N, 1, 28, 28) images in [0, 1]}`` for every resizing in the module docstring."""
    x = masks[:, None]
    return {
        "nearest": staged,
        "area": F.interpolate(x, size=(SIDE, SIDE), mode="area"),
        "bilinear-antialias": F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", antialias=True).clamp(0, 1),
        "mnist-style": torch.stack([mnist_style(m) for m in masks])[:, None],
        "canvas-in-20-box": F.pad(F.interpolate(x, size=(BOX, BOX), mode="area"), (4, 4, 4, 4)),
    }


def main(argv=None) -> int:
    parser = cli(__file__, __doc__)
    args = parse(parser, argv)
    try:
        from ppl_audit.data import load_dataset

        spec, seed, trained, scorer = load_ood_models(args.data_dir, args.cache_dir)
        mnist = load_dataset("mnist", "test", data_dir=args.data_dir).images
        staged = load_dataset("omniglot", data_dir=args.data_dir, limit=spec.num_out).images
        masks = full_resolution_masks(args.data_dir, spec.num_out)
    except PplAuditError as exc:
        print(f"ood_omniglot_resizing: error: {exc}", file=sys.stderr)
        return 2
    # the staged images are the masks' pixel-centre nearest-neighbour resizing (omniglot/PROVENANCE.md):
    # checking that they match shows the masks are the same characters in the same order
    centres = ((torch.arange(SIDE) + 0.5) * masks.shape[-1] / SIDE).floor().long()
    if not torch.equal(masks[:, centres][:, :, centres][:, None], staged):
        print("ood_omniglot_resizing: error: the full-resolution masks do not match the staged 28 x 28 images",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    with torch.no_grad():
        scores_in, _ = scorer.score(mnist)  # the ensembles chunk large sets themselves, as in the audit
    rows = []
    for name, images in resizings(masks, staged).items():
        with torch.no_grad():
            scores_out, _ = scorer.score(images)
        aurocs = column_aurocs(scores_in, scores_out, scorer.columns)
        best = max(aurocs, key=aurocs.get)
        rows.append({"resizing": name, "num_images": len(images), "mean_pixel": round(float(images.mean()), 4),
                     **{f"auroc_percent_{c}": v for c, v in aurocs.items()},
                     "best_column": best, "best_auroc_percent": aurocs[best]})
    seconds = time.perf_counter() - start
    print(f"Omniglot AUROC (%) against {len(mnist)} MNIST test digits, by resizing (MNIST mean pixel "
          f"{float(mnist.mean()):.4f})")
    print_table(["resizing", "mean pixel", *scorer.columns, "best"],
                [[r["resizing"], r["mean_pixel"], *(r[f"auroc_percent_{c}"] for c in scorer.columns),
                  r["best_auroc_percent"]] for r in rows])
    print(f"scored in {seconds:.1f} s")
    write_results(args, {
        "seed": seed, "columns": list(scorer.columns), "rows": rows,
        "mnist_mean_pixel": round(float(mnist.mean()), 4), "paper_best_auroc_percent": 100.0,
        "models": model_cards(trained),
        "seconds": round(seconds, 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
