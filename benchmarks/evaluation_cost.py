"""What one level-set evaluation costs on the house/rocket worlds: the render and the classifier, each the
way it ran before and the way it runs now, in one run.

A gradient-free sampler (SMC, MH) renders a batch of latents and classifies the images under ``no_grad``,
in chunks of 256 (``DEFAULT_CHUNK_SIZE``). Two changes made that cheaper without changing a bit:

* ``render``: the renderer's full-size intermediate images updated in place (``in_place=True``, the
  default without autograd) against fresh tensors for every operation (``in_place=False``, what autograd
  needs and what ran before);
* ``classify``: the house/rocket CNN with its 2x2 max pooling as two strided maxima
  (:class:`~ppl_audit.classifiers.pooling.MaxPool2x2`) against ``nn.MaxPool2d(2)``, whose CPU kernel also
  computes the argmax indices that only a backward pass needs.

The variants are timed interleaved (``--repeats`` rounds, the median kept) so that a busy machine slows
them alike; the ratios are what to read. Every row also checks that both variants give the same bits.
The ``mnist`` row classifies 28x28 images with an untrained LeNet-5 of the MNIST card's shape (its pooling is
the same change; its cost does not depend on its weights): what MNIST level sets gain on the classifier side.
The ``level set`` rows sample one whole target the demo samples (the default SMC, 1,000 particles, seed 0)
both ways, ``--levelset-repeats`` times each in turn: what the sampler gains, its own work included.

Run (from the repository root; the CNN is trained on first use, under a minute):
      .venv/bin/python benchmarks/evaluation_cost.py          # results/evaluation_cost.json
"""

from __future__ import annotations

import statistics
import time

import torch

from _common import one_seed, parse, parser, print_table, set_threads, tests_module, write_results

import ppl_audit as pa
from ppl_audit.classifiers.cnn import PatchCNN, TorchClassifier
from ppl_audit.classifiers.lenet import LeNet5
from ppl_audit.classifiers.base import DEFAULT_CHUNK_SIZE
from ppl_audit.priors.house_rocket import CLASS_NAMES, HouseRocketWorld, make_world
from ppl_audit.priors.render import render_shapes
from ppl_audit.sampling import sample_level_set

CHUNK = DEFAULT_CHUNK_SIZE  # a sampler's evaluation chunk
_with_torch_pooling = tests_module("classifiers.test_pooling").with_torch_pooling  # the network as it was
QUICK = {"particles": 64, "repeats": 2, "worlds": ["house-rocket"], "levelset_repeats": 1, "levelset_particles": 64}
LEVEL_SET = ((0.5, 0.5), 10.0)  # the demo's ambiguous target: prediction and concentration


class _OutOfPlaceWorld(HouseRocketWorld):
    """The world rendered as before: fresh tensors for every full-size operation."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        circle = (z[:, 3], z[:, 4], z[:, 5]) if self.circle else None
        return render_shapes(z[:, 0], z[:, 1], z[:, 2], circle, in_place=False)


def _level_set_rows(world_name: str, classifier: TorchClassifier, particles: int, repeats: int, seed: int):
    """Seconds to sample the demo's ambiguous target before and now, in turn, and whether the samples agree."""
    worlds = {"before": _OutOfPlaceWorld(circle=world_name == "house-rocket-circle"), "now": make_world(world_name)}
    classifiers = {"before": TorchClassifier(_with_torch_pooling(classifier.module), classifier.class_names),
                   "now": classifier}
    def sample(when):
        return sample_level_set(worlds[when], classifiers[when], LEVEL_SET[0], concentration=LEVEL_SET[1],
                                num_particles=particles, seed=seed, device="cpu")

    seconds, latents = alternating_seconds(sample, ("before", "now"), repeats)
    before, now = seconds["before"], seconds["now"]
    return [{"world": world_name, "part": f"level set, {particles} particles (seconds)",
             "before_per_second": round(before, 2), "now_per_second": round(now, 2),
             "speed_up": round(before / now, 2), "same_bits": torch.equal(latents["before"], latents["now"])}]


def alternating_seconds(sample, ways: tuple[str, str], repeats: int) -> tuple[dict, dict]:
    """Median seconds of ``sample(way)`` for both ``ways``, ``repeats`` times each in alternating order (a
    machine's drift cancels) after one untimed warm-up of the second way, and each way's last latents."""
    sample(ways[1])  # warm-up: lazy imports and kernels' first calls
    seconds, latents = {w: [] for w in ways}, {}
    for k in range(repeats):
        for way in ways if k % 2 == 0 else ways[::-1]:
            start = time.perf_counter()
            latents[way] = sample(way).latents
            seconds[way].append(time.perf_counter() - start)
    return {w: statistics.median(ts) for w, ts in seconds.items()}, latents


def _median_rates(variants: dict, n: int, repeats: int) -> dict:
    """Evaluations per second of each variant ``{name: fn}``, the median of ``repeats`` interleaved rounds."""
    times = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up: allocator, caches, oneDNN primitives
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: n / statistics.median(ts) for name, ts in times.items()}


def two_way_evaluations(images, classifier, ways: tuple[str, str], n: int, repeats: int) -> tuple[dict, dict, dict]:
    """Each way's images (``images(way)``: a list of chunks) and their probabilities, and its ``render``,
    ``classify`` and ``render + classify`` rates (evaluations per second, medians of interleaved rounds)."""
    with torch.no_grad():
        drawn = {w: images(w) for w in ways}
        probs = {w: [classifier.probs(x) for x in drawn[w]] for w in ways}
        rates = _median_rates({**{f"render {w}": (lambda w=w: images(w)) for w in ways},
                               **{f"classify {w}": (lambda w=w: [classifier.probs(x) for x in drawn[w]])
                                  for w in ways}}, n, repeats)
    rates.update({f"render + classify {w}": 1 / (1 / rates[f"render {w}"] + 1 / rates[f"classify {w}"]) for w in ways})
    return drawn, probs, rates


def _measure(world_name: str, classifier: TorchClassifier, particles: int, repeats: int, seed: int) -> list[dict]:
    world = make_world(world_name)
    z = world.sample(particles, generator=torch.Generator().manual_seed(seed))
    chunks = z.split(CHUNK)

    def render(in_place):
        latents = [(c[:, 0], c[:, 1], c[:, 2], (c[:, 3], c[:, 4], c[:, 5]) if world.circle else None)
                   for c in chunks]
        return lambda: [render_shapes(*a, in_place=in_place) for a in latents]

    before = TorchClassifier(_with_torch_pooling(classifier.module), classifier.class_names)
    images = torch.cat(render(True)())
    rows = []
    with torch.no_grad():
        same_render = torch.equal(torch.cat(render(False)()), images)
        same_probs = torch.equal(before.probs(images), classifier.probs(images))
        rates = _median_rates({"render before": render(False), "render now": render(True),
                               "classify before": lambda: before.probs(images),
                               "classify now": lambda: classifier.probs(images)}, particles, repeats)
    for part, same in (("render", same_render), ("classify", same_probs)):
        rows.append({"world": world_name, "part": part, "before_per_second": round(rates[f"{part} before"]),
                     "now_per_second": round(rates[f"{part} now"]),
                     "speed_up": round(rates[f"{part} now"] / rates[f"{part} before"], 2), "same_bits": same})
    both = {when: 1 / (1 / rates[f"render {when}"] + 1 / rates[f"classify {when}"]) for when in ("before", "now")}
    rows.append({"world": world_name, "part": "render + classify", "before_per_second": round(both["before"]),
                 "now_per_second": round(both["now"]), "speed_up": round(both["now"] / both["before"], 2),
                 "same_bits": same_render and same_probs})
    return rows


def _lenet_row(particles: int, repeats: int, seed: int) -> dict:
    """LeNet-5 classifying random 28x28 images with torch's pooling and with :class:`MaxPool2x2`."""
    now = TorchClassifier(LeNet5().eval(), [str(d) for d in range(10)])
    before = TorchClassifier(_with_torch_pooling(now.module), now.class_names)
    images = torch.rand(particles, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        same = torch.equal(before.probs(images), now.probs(images))
        rates = _median_rates({"before": lambda: before.probs(images), "now": lambda: now.probs(images)}, particles,
                              repeats)
    return {"world": "mnist (LeNet-5)", "part": "classify", "before_per_second": round(rates["before"]),
            "now_per_second": round(rates["now"]), "speed_up": round(rates["now"] / rates["before"], 2),
            "same_bits": same}


def cost_parser(script: str, doc: str | None):
    """The flags of a script that times evaluations two ways, interleaved, and then the demo's level set."""
    p = parser(script, doc)
    p.add_argument("--particles", type=int, default=4096, help="latents per timed pass (default 4096)")
    p.add_argument("--repeats", type=int, default=15, help="interleaved rounds; the median is kept (default 15)")
    p.add_argument("--worlds", nargs="+", default=["house-rocket", "house-rocket-circle"])
    p.add_argument("--levelset-repeats", type=int, default=2, help="level sets sampled each way (default 2)")
    p.add_argument("--levelset-particles", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None)
    return p


def main(argv=None) -> int:
    args = parse(cost_parser(__file__, __doc__), argv, quick=QUICK)
    seed = one_seed(args)
    set_threads(args.threads)
    torch.manual_seed(seed)
    if args.quick:  # an untrained network of the card's shape: the costs, not the predictions, are measured
        classifier = TorchClassifier(PatchCNN(2, 64, channels=32, hidden=64), CLASS_NAMES)
    else:
        classifier = pa.load_model("house-rocket-cnn", cache=args.cache_dir).model
    rows = [row for world in args.worlds for row in _measure(world, classifier, args.particles, args.repeats, seed)]
    rows.append(_lenet_row(args.particles, args.repeats, seed))
    rows += [row for world in args.worlds
             for row in _level_set_rows(world, classifier, args.levelset_particles, args.levelset_repeats, seed)]
    print(f"evaluations per second, median of {args.repeats} interleaved rounds of {args.particles} latents in "
          f"chunks of {CHUNK} (torch threads {torch.get_num_threads()})")
    print_table(["world", "part", "before /s (s)", "now /s (s)", "speed-up", "same bits"],
                [[r["world"], r["part"], r["before_per_second"], r["now_per_second"], r["speed_up"], r["same_bits"]]
                 for r in rows])
    write_results(args, {"seed": seed, "particles": args.particles, "repeats": args.repeats, "chunk": CHUNK,
                         "torch_threads": torch.get_num_threads(), "rows": rows})
    return 0 if all(r["same_bits"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
