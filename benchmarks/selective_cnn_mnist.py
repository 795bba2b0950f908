"""The CNN's risk-coverage audit on MNIST mixed with out-of-distribution images (Wang et al., Sec. 5).

The LeNet-5 of the level-set audits (models/mnist-lenet5.toml) labels the
10,000 MNIST test digits plus the notMNIST test letters and the Omniglot
subset, which count as wrong whatever label they get; its confidence is the
max-softmax. Prints the AURC, the lowest attainable risk (ties at one
confidence are never split) with its coverage, and how many OoD images get
the CNN's maximum confidence. Wang et al. found a lowest risk of 0.061 for
their CNN on MNIST + Omniglot, with 343 Omniglot images at confidence 1.

Run (from the repository root):
      .venv/bin/python benchmarks/selective_cnn_mnist.py --data-dir ../shared/data   # results/selective_cnn_mnist.json
"""

from __future__ import annotations


import torch


from _common import missing_cards, parse, parser, print_table, quick_data_dir, skip, write_results

from ppl_audit.data import load_dataset
from ppl_audit.errors import PplAuditError
from ppl_audit.metrics import risk_coverage
from ppl_audit.training import load_model

OOD_SETS = ("omniglot", "notmnist")
QUICK_LIMITS = {"mnist": 100, "ood": 20}  # images a quick run reads from MNIST and from each OoD set


def _ood_images(args, name: str, limit: int | None):
    """An OoD set's images; None when a quick run lacks the set (its data folder may be the tests' MNIST)."""
    try:
        return load_dataset(name, data_dir=args.data_dir, limit=limit).images
    except PplAuditError as exc:
        if not args.quick:
            raise
        print(f"selective_cnn_mnist: quick run: {name} left out (not in {args.data_dir})")
        return None


def main(argv=None) -> int:
    args = parse(parser(__file__, __doc__, seeds=()), argv)
    limits = QUICK_LIMITS if args.quick else {"mnist": None, "ood": None}
    if args.quick and missing_cards(args, ["mnist-lenet5"]):
        return skip(args, "the weights of mnist-lenet5 are not cached (a quick run trains nothing)")
    args.data_dir = quick_data_dir(args)
    clf = load_model("mnist-lenet5", cache=args.cache_dir, data_dir=args.data_dir, device="cpu",
                     kind="lenet-classifier").model
    mnist = load_dataset("mnist", "test", data_dir=args.data_dir, limit=limits["mnist"])
    rows = []
    torch.set_grad_enabled(False)  # evaluation only
    for mix in ((), ("omniglot",), OOD_SETS):
        correct, is_ood = [], [torch.zeros(len(mnist), dtype=torch.bool)]
        probs = [clf.probs(mnist.images)]
        correct.append(probs[0].argmax(1) == mnist.labels)
        for name in mix:
            ood = _ood_images(args, name, limits["ood"])
            if ood is None:
                continue
            p = clf.probs(ood)
            probs.append(p)
            correct.append(torch.zeros(len(ood), dtype=torch.bool))
            is_ood.append(torch.ones(len(ood), dtype=torch.bool))
        confidence = torch.cat(probs).max(1).values
        correct, is_ood = torch.cat(correct), torch.cat(is_ood)
        rc = risk_coverage(confidence, correct)
        top = confidence == confidence.max()
        rows.append({"test_set": "MNIST" + "".join(f" + {m}" for m in mix), "num_inputs": rc["num_inputs"],
                     "num_ood": int(is_ood.sum()), "aurc": round(rc["aurc"], 5), "min_risk": round(rc["min_risk"], 5),
                     "coverage_at_min_risk": round(rc["coverage_at_min_risk"], 4),
                     "risk_at_full_coverage": round(rc["risk_at_full_coverage"], 4),
                     "max_confidence": float(confidence.max()), "inputs_at_max_confidence": int(top.sum()),
                     "ood_at_max_confidence": int((top & is_ood).sum())})
    print("LeNet-5 max-softmax as confidence; out-of-distribution images count as wrong")
    print_table(list(rows[0]), [list(r.values()) for r in rows])
    write_results(args, {"seed": None, "seed_note": "evaluates a cached model on fixed images: nothing random",
                         "classifier": clf.trained.card.name, "recipe_hash": clf.trained.card.recipe_hash,
                         "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
