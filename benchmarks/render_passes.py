"""The house/rocket render before and after its rewrite to fewer full-size passes, in one run.

The rewrite (2026-12-05, ``ppl_audit/priors/render.py``): the shape is ``inside_width(x) * max(body(y),
roof(x, y))``, so only the roof's slanted edge is computed at full size (the width mask and the body are a
row and a column); the circle's distance is taken in softness units; the ink floor is one ``threshold_``
pass instead of a comparison then ``masked_fill_``; the pixel coordinates are cached. About 13 full-size
passes became 7. Images move at rounding level, so the checks are the largest change of any pixel and of
any predicted probability, not the bits.

The renderer as it was is read from git (``--before``, default the commit before the rewrite) into a
module of its own; nothing else of that commit runs. Each world's latents are rendered, and classified, in
a sampler's chunks (256) both ways, interleaved (``--repeats`` rounds, median kept). The ``level set``
rows sample the demo's ambiguous target (the default SMC, 1,000 particles, seed 0) with each renderer,
``--levelset-repeats`` times each in alternating order.

Run (from the repository root, in a clone with its history; the CNN is trained on first use):
      .venv/bin/python benchmarks/render_passes.py          # results/render_passes.json
"""

from __future__ import annotations

import subprocess
import types
from unittest import mock

import torch

import ppl_audit as pa
import ppl_audit.priors.house_rocket as house_rocket
from ppl_audit.classifiers.base import DEFAULT_CHUNK_SIZE
from ppl_audit.classifiers.cnn import PatchCNN, TorchClassifier
from ppl_audit.priors.house_rocket import CLASS_NAMES, make_world
from ppl_audit.priors.render import render_shapes
from ppl_audit.sampling import sample_level_set

from _common import REPO, one_seed, parse, print_table, set_threads, skip, write_results
from evaluation_cost import LEVEL_SET, alternating_seconds, cost_parser, two_way_evaluations

BEFORE = "9cf3288"  # the last commit with the 13-pass renderer
RENDER_PATH = "ppl_audit/priors/render.py"
QUICK = {"particles": 256, "repeats": 2, "worlds": ["house-rocket-circle"], "levelset_repeats": 1,
         "levelset_particles": 64}


def renderer_at(revision: str) -> types.ModuleType | None:
    """``ppl_audit/priors/render.py`` as it was at ``revision``, as a module; None where git cannot show it."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{RENDER_PATH}"], check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType(f"render_at_{revision}")
    exec(compile(source, f"{revision}:{RENDER_PATH}", "exec"), module.__dict__)  # our own history, read-only
    return module


def _evaluation_rows(world_name: str, classifier, renderers: dict, particles: int, repeats: int,
                     seed: int) -> list[dict]:
    world = make_world(world_name)
    latents = [(c[:, 0], c[:, 1], c[:, 2], (c[:, 3], c[:, 4], c[:, 5]) if world.circle else None)
               for c in world.sample(particles, generator=torch.Generator().manual_seed(seed)).split(DEFAULT_CHUNK_SIZE)]

    def images(way):
        return [renderers[way](*a) for a in latents]

    drawn, probs, rates = two_way_evaluations(images, classifier, ("before", "now"), particles, repeats)
    pixel = max(float((a - b).abs().max()) for a, b in zip(drawn["before"], drawn["now"]))
    prob = max(float((a - b).abs().max()) for a, b in zip(probs["before"], probs["now"]))
    return [{"world": world_name, "part": part, "before_per_second": round(rates[f"{part} before"]),
             "now_per_second": round(rates[f"{part} now"]),
             "speed_up": round(rates[f"{part} now"] / rates[f"{part} before"], 2),
             "largest_pixel_change": pixel, "largest_probability_change": prob}
            for part in ("render", "render + classify")]


def _level_set_row(world_name: str, classifier, renderers: dict, particles: int, repeats: int, seed: int) -> dict:
    """Seconds to sample the demo's ambiguous target with each renderer, in turn (the order alternates)."""
    world = make_world(world_name)

    def sample(way):
        with mock.patch.object(house_rocket, "render_shapes", renderers[way]):
            return sample_level_set(world, classifier, LEVEL_SET[0], concentration=LEVEL_SET[1],
                                    num_particles=particles, seed=seed, device="cpu")

    seconds, latents = alternating_seconds(sample, ("before", "now"), repeats)
    return {"world": world_name, "part": f"level set, {particles} particles (seconds)",
            "before_per_second": round(seconds["before"], 2), "now_per_second": round(seconds["now"], 2),
            "speed_up": round(seconds["before"] / seconds["now"], 2), "largest_pixel_change": None,
            "largest_probability_change": None}


def main(argv=None) -> int:
    p = cost_parser(__file__, __doc__)
    p.add_argument("--before", default=BEFORE, help=f"git revision of the renderer to compare (default {BEFORE})")
    args = parse(p, argv, quick=QUICK)
    seed = one_seed(args)
    set_threads(args.threads)
    old = renderer_at(args.before)
    if old is None:
        return skip(args, f"git cannot show {RENDER_PATH} at {args.before} here (a clone without its history?)")
    renderers = {"before": old.render_shapes, "now": render_shapes}
    torch.manual_seed(seed)
    if args.quick:  # an untrained network of the card's shape: the costs, not the predictions, are measured
        classifier = TorchClassifier(PatchCNN(2, 64, channels=32, hidden=64), CLASS_NAMES)
    else:
        classifier = pa.load_model("house-rocket-cnn", cache=args.cache_dir).model
    rows = []
    for world_name in args.worlds:
        rows += _evaluation_rows(world_name, classifier, renderers, args.particles, args.repeats, seed)
        if args.levelset_repeats:
            rows.append(_level_set_row(world_name, classifier, renderers, args.levelset_particles,
                                       args.levelset_repeats, seed))
    columns = ["world", "part", "before_per_second", "now_per_second", "speed_up", "largest_pixel_change",
               "largest_probability_change"]
    print(f"render at {args.before} (before) and now: {args.particles} latents in chunks of {DEFAULT_CHUNK_SIZE}, "
          f"median of {args.repeats} interleaved rounds; torch threads {torch.get_num_threads()}")
    print_table(columns, [[r[c] for c in columns] for r in rows])
    write_results(args, {"benchmark": "render_passes", "before": args.before, "columns": columns, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
