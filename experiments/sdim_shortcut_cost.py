"""What SDIM's crash work-around (issue 19) costs a training step: strided 1x1 shortcut against subsample-then-1x1.

The shipped card's network (``models/mnist-sdim.toml``: channels 16, 32, 64) trains for ``--steps`` Adam
steps on random 28 x 28 batches of the card's batch size, twice per repeat, interleaved:

* ``strided-conv``: the shortcuts as ``nn.Conv2d(in, out, 1, stride=2)``, as before the fix. With 16 and
  32 input channels this shape does not reach the faulty oneDNN kernel on AVX2 or AVX-512, so it runs
  here (``experiments/onednn_strided_1x1``);
* ``subsample-then-1x1``: the shortcuts as :class:`ppl_audit.classifiers.sdim.PointwiseDownsample`, the fix.

Each row is the best of ``--repeats`` (the least disturbed by other work on the machine), and the ratio
is taken within the run.

Run (from the repository root):
      .venv/bin/python experiments/sdim_shortcut_cost.py            # results/sdim_shortcut_cost.json
      .venv/bin/python experiments/sdim_shortcut_cost.py --quick    # a smoke run, not written
"""

from __future__ import annotations

import time

import torch
from torch import nn


from _common import parse, parser as cli, print_table, write_results

from ppl_audit.cards import load_card
from ppl_audit.classifiers import sdim

SEED = 0


def networks(card) -> dict[str, nn.Module]:
    """The card's network with the fix, and a copy with the old strided shortcuts (same weights)."""
    torch.manual_seed(SEED)
    fixed = sdim.build_sdim(card)
    old = sdim.build_sdim(card)
    old.load_state_dict(fixed.state_dict())
    for module in old.modules():
        if isinstance(module, sdim.BasicBlock) and isinstance(module.shortcut, nn.Sequential):
            pointwise = module.shortcut[0]
            strided = nn.Conv2d(pointwise.in_channels, pointwise.out_channels, 1, stride=pointwise.subsample,
                                bias=False)
            strided.weight.data.copy_(pointwise.weight.data)
            module.shortcut[0] = strided
    return {"strided-conv": old, "subsample-then-1x1": fixed}


def time_steps(net: nn.Module, config, steps: int) -> float:
    """Seconds per training step (forward, the three losses, backward, Adam) after one warm-up step."""
    generator = torch.Generator().manual_seed(SEED)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    net.train()

    def step():
        x = torch.rand(config.batch_size, 1, 28, 28, generator=generator)
        y = torch.randint(0, 10, (config.batch_size,), generator=generator)
        out = net.losses(x, y, config.margin, config.per_dimension)
        loss = config.mi_weight * out["mi"] + config.nll_weight * out["nll"] + config.margin_weight * out["margin"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = cli(__file__, __doc__, seeds=(SEED,))
    parser.add_argument("--steps", type=int, default=40, help="timed steps per repeat (default 40)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the best is kept (default 5)")
    args = parse(parser, argv)
    steps, repeats = (3, 1) if args.quick else (args.steps, args.repeats)
    card = load_card("mnist-sdim")
    config = sdim._config(card)
    nets = networks(card)
    best = dict.fromkeys(nets, float("inf"))
    for _ in range(repeats):
        for name, net in nets.items():
            best[name] = min(best[name], time_steps(net, config, steps))
    base = best["strided-conv"]
    rows = [[name, round(seconds * 1e3, 2), round(seconds / base, 3)] for name, seconds in best.items()]
    print_table(["shortcut", "ms per step", "ratio to strided-conv"], rows)
    write_results(args, {"seed": SEED, "card": card.name, "batch_size": config.batch_size, "steps": steps,
                         "repeats": repeats, "columns": ["shortcut", "ms_per_step", "ratio_to_strided_conv"],
                         "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
