"""What float32 subnormals cost the house/rocket evaluations: the render's ink floor off and on, in one run.

The renderer's soft edges give ink of ``sigmoid(d / 0.35)``, about 1e-38 to 1e-44 some 30 pixels from
an edge: float32 subnormals, and the blur's products of small ink make more. A CPU computes with
subnormals through slow microcode, so the blur's two matrix products and the classifier's first layers ran
several times slower on rendered images than on the same shapes of ordinary numbers. Ink below
``INK_FLOOR`` (1e-30) is now set to 0 before the blur (``ppl_audit/priors/render.py``).

Each world's latents are rendered and classified in a sampler's chunks (256) with the floor at 0 (as
before; the masking pass still runs) and at its default, interleaved (``--repeats`` rounds, median kept).
The checks: the largest change of any pixel (at most the floor plus the pixel's own rounding), and
whether the classifier's probabilities keep every bit. The ``level set`` rows sample the demo's ambiguous target both ways in
turn, and say whether the samples are the same.

Run (from the repository root; the CNN is trained on first use, under a minute):
      .venv/bin/python benchmarks/ink_floor.py          # results/ink_floor.json
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

import ppl_audit as pa
import ppl_audit.priors.render as render
from ppl_audit.classifiers.base import DEFAULT_CHUNK_SIZE
from ppl_audit.priors.house_rocket import make_world
from ppl_audit.sampling import sample_level_set

from _common import one_seed, parse, print_table, set_threads, write_results
from evaluation_cost import LEVEL_SET, alternating_seconds, cost_parser, two_way_evaluations

FLOORS = {"off": 0.0, "on": render.INK_FLOOR}  # 0: no ink is dropped, as before the floor
QUICK = {"particles": 256, "repeats": 2, "worlds": ["house-rocket"], "levelset_repeats": 1, "levelset_particles": 64}


@contextmanager
def _floor(value: float):
    """The renderer with ``INK_FLOOR`` at ``value`` (0: no ink is dropped, as before the floor)."""
    default = render.INK_FLOOR
    render.INK_FLOOR = value
    try:
        yield
    finally:
        render.INK_FLOOR = default


def _evaluation_rows(world_name: str, classifier, particles: int, repeats: int, seed: int) -> list[dict]:
    world = make_world(world_name)
    chunks = world.sample(particles, generator=torch.Generator().manual_seed(seed)).split(DEFAULT_CHUNK_SIZE)

    def images(when):
        with _floor(FLOORS[when]):
            return [world.decode(c) for c in chunks]

    drawn, probs, rates = two_way_evaluations(images, classifier, tuple(FLOORS), particles, repeats)
    pixel_change = max(float((a - b).abs().max()) for a, b in zip(drawn["off"], drawn["on"]))
    same_probs = all(torch.equal(a, b) for a, b in zip(probs["off"], probs["on"]))
    return [{"world": world_name, "part": part, "off_per_second": round(rates[f"{part} off"]),
             "on_per_second": round(rates[f"{part} on"]),
             "speed_up": round(rates[f"{part} on"] / rates[f"{part} off"], 2),
             "largest_pixel_change": pixel_change, "same_probability_bits": same_probs}
            for part in ("render", "classify", "render + classify")]


def _level_set_row(world_name: str, classifier, particles: int, repeats: int, seed: int) -> dict:
    """Seconds to sample the demo's ambiguous target with the floor off and on, in turn (the order alternates)."""
    world = make_world(world_name)

    def sample(when):
        with _floor(FLOORS[when]):
            return sample_level_set(world, classifier, LEVEL_SET[0], concentration=LEVEL_SET[1],
                                    num_particles=particles, seed=seed, device="cpu")

    seconds, latents = alternating_seconds(sample, ("off", "on"), repeats)
    off, on = seconds["off"], seconds["on"]
    return {"world": world_name, "part": f"level set, {particles} particles (seconds)", "off_per_second": round(off, 2),
            "on_per_second": round(on, 2), "speed_up": round(off / on, 2), "largest_pixel_change": None,
            "same_probability_bits": torch.equal(latents["off"], latents["on"])}


def main(argv=None) -> int:
    args = parse(cost_parser(__file__, __doc__), argv, quick=QUICK)
    seed = one_seed(args)
    set_threads(args.threads)
    classifier = pa.load_model("house-rocket-cnn", cache=args.cache_dir).model
    rows = []
    for world_name in args.worlds:
        rows += _evaluation_rows(world_name, classifier, args.particles, args.repeats, seed)
        if args.levelset_repeats:
            rows.append(_level_set_row(world_name, classifier, args.levelset_particles, args.levelset_repeats, seed))
    columns = ["world", "part", "off_per_second", "on_per_second", "speed_up", "largest_pixel_change",
               "same_probability_bits"]
    print(f"render's ink floor off and on: {args.particles} latents in chunks of {DEFAULT_CHUNK_SIZE}, median of "
          f"{args.repeats} interleaved rounds; torch threads {torch.get_num_threads()}")
    print_table(columns, [[r[c] for c in columns] for r in rows])
    write_results(args, {"benchmark": "ink_floor", "columns": columns, "rows": rows})
    return 0 if all(r["same_probability_bits"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
