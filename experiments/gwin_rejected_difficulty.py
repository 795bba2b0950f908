"""How hard are the digits the Bayesian LeNet-5 rejects? Other classifiers' accuracy on them, beside GWIN's.

GWIN relabels a rejected digit by the BNN's label of ``G(x, z)``, so its
accuracy on the rejected subset is bounded by how well *any* model of this
size can read those digits. This script takes the digits the audit's BNN
rejects (run 0 of ``evaluate_gwin``: the same S = 10 draws, seed 0) at each
of the paper's taus and labels them with models trained independently on the
same 60,000 training digits, none of them tuned here:

* the deterministic LeNet-5 (``models/mnist-lenet5.toml``);
* SDIM (``models/mnist-sdim.toml``), the class of highest likelihood;
* 1-NN over the training digits (L2);
* VAE synthesis (``models/mnist-class-vae.toml``, the selective audit's search);
* "any of the four": the share of digits at least one of them labels right,
  an optimistic reference no single model reaches;

beside the BNN alone, BNN+GWIN (the same run) and the paper's BNN+GWIN figure.
A second table does the same for the *training* digits the BNN rejects (BNN
and BNN+GWIN only; the other models were trained on them): how much better
GWIN re-maps digits it was trained on than new ones.

Run (from the repository root; ~1 minute with every model cached):
      .venv/bin/python experiments/gwin_rejected_difficulty.py --data-dir ../shared/data
writes results/gwin_rejected_difficulty.json.
Exits with status 2 when the data or a model is missing (``ppl-audit train`` builds each card).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch


from _common import parse, parser as cli, print_table, write_results

from ppl_audit.audits import load_audit_file
from ppl_audit.audits.gwin import PAPER_GWIN_ACCURACY, PAPER_TAUS
from ppl_audit.errors import PplAuditError
from ppl_audit.training import load_model

ROOT = Path(__file__).resolve().parents[1]
OTHERS = ("LeNet-5", "SDIM", "1-NN", "VAE synthesis")


def accuracy_by_tau(certainty: torch.Tensor, right: dict[str, torch.Tensor]) -> list[dict]:
    """One row per paper tau: how many digits have certainty below it, and each model's accuracy (%) on them."""
    rows = []
    for tau in PAPER_TAUS:
        mask = certainty < tau
        rows.append({"tau": tau, "num_rejected": int(mask.sum()),
                     **{f"accuracy_percent_{n}": round(100 * float(r[mask].float().mean()), 2) if mask.any() else None
                        for n, r in right.items()}})
    return rows


def main(argv=None) -> int:
    parser = cli(__file__, __doc__)
    args = parse(parser, argv)
    _, gwin_spec, seed = load_audit_file(ROOT / "analyses" / "mnist-gwin.toml")
    _, selective_spec, _ = load_audit_file(ROOT / "analyses" / "mnist-selective.toml")
    try:
        from ppl_audit.classifiers.nearest_neighbour import NearestNeighbourClassifier
        from ppl_audit.classifiers.synthesis import SynthesisClassifier
        from ppl_audit.data import load_dataset

        loading = dict(cache=args.cache_dir, data_dir=args.data_dir, device="cpu")
        bnn = load_model(gwin_spec.classifier, **loading, kind="bayesian-lenet-classifier").model
        gwin = load_model(gwin_spec.gwin, **loading, kind="gwin")
        lenet = load_model(selective_spec.cnn, **loading, kind="lenet-classifier").model
        sdim = load_model(selective_spec.sdim, **loading, kind="sdim-classifier").model
        class_vae = load_model(selective_spec.class_vae, **loading, kind=("class-vae", "class-gan"))
        test = load_dataset("mnist", "test", data_dir=args.data_dir)
        train = load_dataset("mnist", "train", data_dir=args.data_dir)
    except PplAuditError as exc:
        print(f"gwin_rejected_difficulty: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    # run 0 of evaluate_gwin: its generator, its S, the widest tau's rejected set transformed once
    generator = torch.Generator().manual_seed(seed * 1000)
    with torch.no_grad():
        before = bnn.predict(test.images, gwin_spec.num_samples, generator=generator)
        widest = before.certainty < max(PAPER_TAUS)
        x, y = test.images[widest], test.labels[widest]
        after = bnn.predict(gwin.module.transform(x, generator), gwin_spec.num_samples, generator=generator)
        labels = {"BNN": before.labels[widest], "BNN+GWIN": after.labels,
                  "LeNet-5": lenet.probs(x).argmax(1), "SDIM": sdim.probs(x).argmax(1),
                  "1-NN": NearestNeighbourClassifier(train.images, train.labels, bnn.class_names).predict(x)[0]}
    config = dataclasses.replace(selective_spec.search_config("class_vae"), seed=seed)
    labels["VAE synthesis"] = SynthesisClassifier(class_vae.module, bnn.class_names, config).search(x).labels
    right = {name: (lab.cpu() == y) for name, lab in labels.items()}
    right["any of the four"] = torch.stack([right[n] for n in OTHERS]).any(0)
    certainty = before.certainty[widest]
    with torch.no_grad():  # the same pipeline on the training digits (GWIN trained on them)
        train_before = bnn.predict(train.images, gwin_spec.num_samples, generator=generator)
        train_widest = train_before.certainty < max(PAPER_TAUS)
        train_after = bnn.predict(gwin.module.transform(train.images[train_widest], generator),
                                  gwin_spec.num_samples, generator=generator)
    train_y = train.labels[train_widest]
    train_right = {"BNN": train_before.labels[train_widest] == train_y, "BNN+GWIN": train_after.labels == train_y}
    train_certainty = train_before.certainty[train_widest]
    rows = [{**row, "paper_gwin_accuracy_percent": PAPER_GWIN_ACCURACY[row["tau"]]}
            for row in accuracy_by_tau(certainty, right)]
    train_rows = accuracy_by_tau(train_certainty, train_right)
    seconds = time.perf_counter() - start
    names = list(right)
    print(f"Accuracy (%) on the MNIST test digits the BNN rejects (run 0, S = {gwin_spec.num_samples}, seed {seed})")
    print_table(["tau", "n", *names, "paper BNN+GWIN"],
                [[r["tau"], r["num_rejected"], *(r[f"accuracy_percent_{n}"] for n in names),
                  r["paper_gwin_accuracy_percent"]] for r in rows])
    print(f"The same on the {len(train.images)} training digits (GWIN was trained on them)")
    print_table(["tau", "n", *train_right],
                [[r["tau"], r["num_rejected"], *(r[f"accuracy_percent_{n}"] for n in train_right)] for r in train_rows])
    print(f"{seconds:.1f} s")
    write_results(args, {
        "seed": seed, "num_samples": gwin_spec.num_samples, "rows": rows,
        "training_digit_rows": train_rows,
        "models": {name: {"card": t.card.name, "recipe_hash": t.card.recipe_hash}
                   for name, t in (("bnn", bnn.trained), ("gwin", gwin), ("lenet", lenet.trained),
                                   ("sdim", sdim.trained), ("class_vae", class_vae))},
        "seconds": round(seconds, 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
