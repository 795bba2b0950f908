"""What scoring with the whole generative ensemble costs against the raw network passes it needs.

``raw`` times only the batched network calls one scoring of N images needs:
the VAE ensemble's encoder on the images (K members at once), its decoder on
the K x S x N importance samples (noise drawn beforehand), and every WGAN
critic on the images, in the same chunks as the scorer uses. ``scorer`` times
:class:`ppl_audit.audits.ood.EnsembleScorer.score`: every column (D, Var(D),
rate, log p, WAIC) with input checks, the importance-weighted bound's
log-sum-exp, the closed-form rate (a second encoder pass), finiteness checks
and the per-input WAIC. The issue's bar: scorer <= 2 x raw. Rows are the best
of ``--repeats``.

Run (from the repository root):
      .venv/bin/python benchmarks/ood_scoring_cost.py --data-dir ../shared/data      # results/ood_scoring_cost.json
"""

from __future__ import annotations


import torch


from _common import (best_time, missing_cards, one_seed, parse, parser, print_table, quick_data_dir, set_threads, skip,
                     write_results)

from ppl_audit.audits.ood import EnsembleScorer
from ppl_audit.data import load_dataset
from ppl_audit.training import load_model

GOAL_RATIO = 2.0  # the bar
IWAE_SAMPLES = 16
CARDS = ("mnist-vae-ensemble", "mnist-gan-ensemble")  # the loaders' defaults, checked before a quick run
QUICK = {"num_images": 100, "repeats": 1}  # the tests' 100 digits, timed once


def main(argv=None) -> int:
    p = parser(__file__, __doc__)
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = parse(p, argv)
    seed = one_seed(args)
    set_threads(args.threads)
    if args.quick:
        missing = missing_cards(args, CARDS)
        if missing:
            return skip(args, f"the weights of {', '.join(missing)} are not cached (a quick run trains nothing)")
        args.num_images, args.repeats = QUICK["num_images"], QUICK["repeats"]
    args.data_dir = quick_data_dir(args)
    vae = load_model("mnist-vae-ensemble", cache=args.cache_dir, data_dir=args.data_dir, device="cpu",
                     kind="vae-ensemble").module
    gan = load_model("mnist-gan-ensemble", cache=args.cache_dir, data_dir=args.data_dir, device="cpu",
                     kind="gan-ensemble").module
    x = load_dataset("mnist", "test", data_dir=args.data_dir, limit=args.num_images).images
    flat = x.flatten(1)
    k, s, d = vae.num_members, IWAE_SAMPLES, vae.latent_dim
    chunk = vae._chunk(None, s)  # the scorer's own chunk size
    eps = torch.randn(k, s, len(x), d, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def raw_vae():
        for start in range(0, len(flat), chunk):
            part = flat[start:start + chunk]
            mean, log_var = vae.encoder(part)
            vae.decoder_logits(mean[:, None] + torch.exp(0.5 * log_var)[:, None] * eps[:, :, start:start + chunk])

    @torch.no_grad()
    def raw_critics():
        for member in range(len(gan)):
            critic = gan.member(member).critic
            for part in x.split(1000):
                critic(part)

    vae_only = EnsembleScorer(vae, iwae_samples=s)
    full = EnsembleScorer(vae, gan=gan, iwae_samples=s)
    seconds = {
        "raw VAE passes": best_time(raw_vae, args.repeats),
        "raw VAE + critic passes": best_time(lambda: (raw_vae(), raw_critics()), args.repeats),
        "scorer, VAE columns (rate, log p, WAIC)": best_time(lambda: vae_only.score(x), args.repeats),
        "scorer, all columns": best_time(lambda: full.score(x), args.repeats),
    }
    pairs = {"scorer, VAE columns (rate, log p, WAIC)": "raw VAE passes",
             "scorer, all columns": "raw VAE + critic passes"}
    rows = []
    for name, t in seconds.items():
        base = pairs.get(name)
        ratio = t / seconds[base] if base else None
        rows.append({"row": name, "seconds": round(t, 3), "images_per_second": round(len(x) / t, 1),
                     "ratio_to_raw": None if ratio is None else round(ratio, 3),
                     "meets_goal": None if ratio is None else bool(ratio <= GOAL_RATIO)})
    print(f"{len(x)} MNIST test images, K = {k} VAEs x S = {s} importance samples, {len(gan)} critics, "
          f"best of {args.repeats} (torch threads {torch.get_num_threads()})")
    print_table(["row", "s", "images/s", "x raw", f"<= {GOAL_RATIO:g}x"],
                [[r["row"], r["seconds"], r["images_per_second"], r["ratio_to_raw"], r["meets_goal"]] for r in rows])
    write_results(args, {"seed": seed, "num_images": len(x), "members": k, "iwae_samples": s,
                         "critics": len(gan), "repeats": args.repeats, "goal_ratio": GOAL_RATIO, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
