"""The OoD audit and `ppl-audit ood`: tiny ensembles, hand-made scores, the audit file, folders of images."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ppl_audit import cli
from ppl_audit.audits import load_audit_file
from ppl_audit.audits import ood as ood_audit
from ppl_audit.audits.ood import ROWS, EnsembleScorer, OodAuditSpec, score_folder
from ppl_audit.data import DataFileError, DataNotFoundError, load_dataset
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.generative.gan_ensemble import GANEnsemble
from ppl_audit.generative.vae_ensemble import VAEEnsemble
from ppl_audit.report import Figure, Report, Section, Table, write_report
from tests.report_pins import assert_pinned

REPO = Path(__file__).resolve().parents[2]
OOD_FILE = REPO / "analyses" / "mnist-ood.toml"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_models():
    return {"vae": VAEEnsemble(members=2, latent_dim=2, hidden=(16,), seed=0).eval(),
            "beta_vae": VAEEnsemble(members=2, latent_dim=2, hidden=(16,), seed=5).eval(),
            "gan": GANEnsemble(members=2, latent_dim=2, channels=4, critic_channels=4, seed=0).eval()}


@pytest.fixture(scope="module")
def mnist(mnist_fixture_dir):
    return load_dataset("mnist", "test", data_dir=mnist_fixture_dir).images


class _Brightness:
    """A stand-in ensemble whose 'log-likelihood' is minus the mean brightness (members disagree a little)."""

    def log_likelihood(self, x, num_samples=16, generator=None, common_draws=False):
        b = x.flatten(1).mean(1)
        return torch.stack([-b, -1.1 * b])

    def rate(self, x):
        b = x.flatten(1).mean(1)
        return torch.stack([b, b])

    def critic_scores(self, x):
        b = x.flatten(1).mean(1)
        return torch.stack([-b, -3 * b])


def test_scores_of_a_known_ensemble_separate_bright_images_perfectly():
    fake = _Brightness()
    scorer = EnsembleScorer(fake, gan=fake)
    dark, bright = torch.rand(30, 1, 28, 28) * 0.2, 0.8 + torch.rand(20, 1, 28, 28) * 0.2
    s_in, _ = scorer.score(dark)
    s_out, log_lik = scorer.score(bright)
    assert log_lik.shape == (2, 20)
    from ppl_audit.metrics import ood_metrics

    for column in ("D", "Var(D)", "rate", "log p", "WAIC"):
        assert ood_metrics(s_in[column], s_out[column])["auroc"] == 1.0, column


def test_an_images_scores_do_not_depend_on_its_batch_or_place(tiny_models, mnist):
    """The importance draws are shared by every image, so scoring one image alone or among others agrees."""
    scorer = EnsembleScorer(tiny_models["vae"], beta_vae=tiny_models["beta_vae"], gan=tiny_models["gan"],
                            iwae_samples=4)
    among, log_lik = scorer.score(mnist[:6])
    alone, log_lik_alone = scorer.score(mnist[5:6])
    reversed_, _ = scorer.score(mnist[:6].flip(0))
    torch.testing.assert_close(log_lik_alone[:, 0], log_lik[:, 5])
    for column in scorer.columns:
        torch.testing.assert_close(alone[column][0], among[column][5])
        torch.testing.assert_close(reversed_[column].flip(0), among[column])


def test_common_draws_and_given_noise_are_refused_together(tiny_models, mnist):
    vae = tiny_models["vae"]
    with pytest.raises(InvalidInputError, match="not both"):
        vae.log_likelihood(mnist[:2], 2, noise=torch.zeros(2, 2, 2, 2), common_draws=True)


def test_audit_file_spells_out_the_defaults():
    module, spec, seed = load_audit_file(OOD_FILE)
    assert module is ood_audit and seed == 0 and spec == OodAuditSpec()
    assert spec.rows == ROWS and spec.iwae_samples == 16


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": ("mars",)}, "rows must be a non-empty subset"),
    ({"num_out": 0}, "num_out must be a positive integer"),
    ({"adversarial_epsilon": 0.0}, r"adversarial_epsilon must be a number in \(0, 1\]"),
    ({"iwae_samples": -1}, "iwae_samples"),
])
def test_spec_errors_name_the_problem(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        OodAuditSpec(**kwargs)


def test_unknown_audit_key_is_an_audit_file_error(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "ood"\nmembers = 3\n')
    with pytest.raises(AuditFileError, match="unknown key"):
        load_audit_file(path)


def _tiny_audit(mnist):
    """``(spec, seed, images)`` of the audit file with tiny sizes, stand-ins for the real OoD sets."""
    _, spec, seed = load_audit_file(OOD_FILE)
    spec = OodAuditSpec(**{**spec.__dict__, "num_out": 20, "iwae_samples": 2, "adversarial_steps": 2,
                           "device": "cpu"})
    stand_ins = {"mnist": mnist, "omniglot": 1 - mnist[:20], "notmnist": mnist[20:40].transpose(2, 3),
                 "fashion-mnist": torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(7))}  # seeded: its report is pinned
    return spec, seed, stand_ins


def test_tiny_audit_runs_every_row_and_column(tiny_models, mnist, tmp_path):
    spec, seed, stand_ins = _tiny_audit(mnist)
    report = ood_audit.run(spec, seed=seed, models=tiny_models, images=stand_ins)
    auroc = report.sections[0].tables[0]
    assert auroc.columns[1:7] == ["D", "Var(D)", "rate", "log p", "WAIC", "WAIC (beta = 0.1)"]
    assert [row[0] for row in auroc.rows] == ["Omniglot", "notMNIST", "Fashion-MNIST", "Uniform", "Gaussian",
                                              "HFlip", "VFlip", "Adversarial"]
    for row in report.metrics["rows"].values():
        for cell in row["columns"].values():
            assert 0 <= cell["auroc"] <= 1 and cell["num_in"] == 100
    assert report.metrics["rows"]["adversarial"]["num_images"] == 20
    histograms = next(s for s in report.sections if s.name == "histograms").figures
    assert len(histograms) == 6  # one histogram per column
    missed = report.metrics["least_flagged"]
    assert set(missed) == set(ROWS)
    grids = {f.data["row"] for f in next(s for s in report.sections if s.name == "missed").figures}
    for row, entry in missed.items():
        assert entry["column"] == report.metrics["rows"][row]["best_column"]
        assert len(entry["images"]) == ood_audit.MISSED_IMAGES  # 16 of the row's 20 images
        percentiles = [e["percentile"] for e in entry["images"]]
        assert percentiles == sorted(percentiles)
        assert (row in grids) == (percentiles[0] < 1)  # a grid only where an image is missed
        assert "class" not in entry["images"][0]  # no labels given for the digits
    ic = report.metrics["information_criteria"]
    assert set(ic) == {"mnist", *ROWS} and ic["mnist"]["num_members"] == 2
    out = write_report(report, tmp_path / "ood")
    assert json.loads((out / "report.json").read_text())["kind"] == "ood"
    again = ood_audit.run(spec, seed=seed, models=tiny_models, images=stand_ins)
    assert again.metrics == report.metrics  # same seed, same numbers
    assert_pinned("ood-tiny", out / "report.json")
    assert "flips_by_class" not in report.metrics  # no labels given for the digits: no split


def _holds_rendering(value) -> bool:
    """Whether a Report, Section, Table or Figure sits anywhere inside ``value``."""
    if isinstance(value, (Report, Section, Table, Figure)):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    return isinstance(value, (list, tuple)) and any(_holds_rendering(v) for v in value)


def test_evaluate_gives_the_numbers_and_present_the_report_of_run(tiny_models, mnist):
    """The tiny audit's numbers without rendering; rendering them gives run's report.json byte for byte."""
    from ppl_audit.metrics import ood_metrics
    from ppl_audit.report.writers import report_to_json_bytes

    spec, seed, stand_ins = _tiny_audit(mnist)
    results = ood_audit.evaluate(spec, seed=seed, models=tiny_models, images=stand_ins)
    assert isinstance(results, ood_audit.OodResults) and not _holds_rendering(results)
    assert results.columns == ("D", "Var(D)", "rate", "log p", "WAIC", "WAIC (beta = 0.1)")
    assert list(results.images) == ["mnist", *ROWS] and results.num_in == 100
    assert all(len(results.images[row]) == 20 for row in ROWS)
    scorer = EnsembleScorer(tiny_models["vae"], beta_vae=tiny_models["beta_vae"], gan=tiny_models["gan"],
                            iwae_samples=2, seed=seed)
    direct, _ = scorer.score(mnist)  # the audit scores with the seed's importance draws
    for column in results.columns:
        torch.testing.assert_close(results.scores["mnist"][column], direct[column])
    for row in ROWS:
        entry, metrics = results.rows[row], results.metrics[row]
        best = max(results.columns, key=lambda c: metrics[c]["auroc"])
        assert entry["best_column"] == best and entry["num_images"] == 20
        assert entry["best_auroc_percent"] == round(100 * metrics[best]["auroc"], 2)
        assert entry["at_or_above_paper"] == (entry["best_auroc_percent"] >= ood_audit.PAPER_BEST_AUROC[row])
        assert metrics["WAIC"]["auroc"] == ood_metrics(results.scores["mnist"]["WAIC"],
                                                       results.scores[row]["WAIC"])["auroc"]
        assert results.least_flagged[row] == {"column": best, "images": ood_audit.least_flagged(
            results.scores["mnist"][best], results.scores[row][best])}
    ic = results.information_criteria
    assert list(ic) == ["mnist", *ROWS] and ic["mnist"]["num_members"] == 2 and ic["omniglot"]["num_inputs"] == 20
    assert results.flips_by_class == {}  # no labels given for the digits
    rendered = report_to_json_bytes(ood_audit.present(results))
    assert report_to_json_bytes(ood_audit.present(results)) == rendered  # present leaves its input as it was
    assert report_to_json_bytes(ood_audit.run(spec, seed=seed, models=tiny_models, images=stand_ins)) == rendered


class _SortedBrightness(_Brightness):
    """``_Brightness`` over each image's sorted pixels: bit for bit the same for an image and its mirror image."""

    def log_likelihood(self, x, num_samples=16, generator=None, common_draws=False):
        return super().log_likelihood(x.flatten(1).sort(1).values)

    def rate(self, x):
        return super().rate(x.flatten(1).sort(1).values)

    def critic_scores(self, x):
        return super().critic_scores(x.flatten(1).sort(1).values)


def test_flip_rows_are_split_by_the_mirrored_digits_class(mnist, mnist_fixture_dir):
    """A flip-invariant score gives each class's mirrored digits exactly their originals' AUROC."""
    from ppl_audit.metrics import ood_metrics

    labels = load_dataset("mnist", "test", data_dir=mnist_fixture_dir).labels
    fake = _SortedBrightness()
    spec = OodAuditSpec(rows=("hflip", "vflip"), num_out=20, iwae_samples=2, device="cpu")
    report = ood_audit.run(spec, models={"vae": fake, "gan": fake}, images={"mnist": mnist, "mnist_labels": labels})
    scores_in, _ = EnsembleScorer(fake, gan=fake).score(mnist)
    originals, _ = EnsembleScorer(fake, gan=fake).score(mnist[:20])
    section = next(s for s in report.sections if s.name == "flips_by_class")
    expected_warnings = []
    for row, title in (("hflip", "HFlip"), ("vflip", "VFlip")):
        split = report.metrics["flips_by_class"][row]
        column = split["column"]
        assert column == report.metrics["rows"][row]["best_column"]
        assert sum(r["num_images"] for r in split["classes"]) == 20 and len(split["classes"]) == 10
        for r in split["classes"]:
            mine = labels[:20] == r["class"]
            assert r["num_images"] == int(mine.sum())
            if r["num_images"]:
                want = ood_metrics(scores_in[column], originals[column][mine])["auroc"]
                assert r["auroc"] == pytest.approx(want, abs=1e-6)
                assert r["auroc_without"] == pytest.approx(
                    ood_metrics(scores_in[column], originals[column][~mine])["auroc"], abs=1e-6)
                if want < 0.5:
                    expected_warnings.append(f"{title}: mirrored {r['class']}s")
            else:
                assert r["auroc"] is None and r["auroc_without"] is None
    assert [w.split(" score")[0] for w in section.warnings] == expected_warnings and expected_warnings
    for row in ("hflip", "vflip"):  # the least-flagged mirror images: lowest score first, with their digit's class
        entry = report.metrics["least_flagged"][row]
        column = entry["column"]
        want = torch.sort(originals[column], stable=True).indices[:ood_audit.MISSED_IMAGES].tolist()
        assert [e["index"] for e in entry["images"]] == want
        assert [e["class"] for e in entry["images"]] == labels[want].tolist()


def test_least_flagged_percentiles_average_to_the_auroc_over_a_whole_row():
    from ppl_audit.metrics import ood_metrics

    s_in, s_out = torch.randn(50, generator=torch.Generator().manual_seed(0)), torch.arange(10.0) / 5
    every = ood_audit.least_flagged(s_in, s_out, k=10)
    assert [e["index"] for e in every] == list(range(10))
    assert np.mean([e["percentile"] for e in every]) == pytest.approx(ood_metrics(s_in, s_out)["auroc"], abs=1e-6)
    with pytest.raises(InvalidInputError, match="k must be an integer >= 1"):
        ood_audit.least_flagged(s_in, s_out, k=0)


def test_auroc_by_class_refuses_labels_of_another_length():
    with pytest.raises(InvalidInputError, match=r"labels must have the OoD scores' shape \(3,\)"):
        ood_audit.auroc_by_class(torch.zeros(4), torch.zeros(3), torch.zeros(2, dtype=torch.long))


def _folder(tmp_path, mnist) -> Path:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    np.save(folder / "batch.npy", (mnist[:3, 0].numpy() * 255).astype(np.uint8))
    Image.fromarray((mnist[3, 0].numpy() * 255).astype(np.uint8)).save(folder / "one.png")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_score_folder_reads_pngs_and_arrays_and_gives_percentiles(tiny_models, mnist, mnist_fixture_dir, tmp_path):
    folder = _folder(tmp_path, mnist)
    report = score_folder(folder, num_reference=50, data_dir=mnist_fixture_dir, iwae_samples=2, device="cpu",
                          models={"vae": tiny_models["vae"], "gan": tiny_models["gan"]})
    images = report.metrics["images"]
    assert [e["image"] for e in images] == ["batch.npy[0]", "batch.npy[1]", "batch.npy[2]", "one.png"]
    assert all(0 <= e["WAIC percentile"] <= 1 for e in images)
    # The files hold MNIST test digits 0-3 as 8-bit grey levels, MNIST's own format: read back, they are
    # the same pixels, so the same batch scores the same.
    scorer = EnsembleScorer(tiny_models["vae"], gan=tiny_models["gan"], iwae_samples=2)
    direct, _ = scorer.score(mnist[:4])
    assert [e["WAIC"] for e in images] == pytest.approx(direct["WAIC"].tolist(), abs=1e-3)
    ref_scores, _ = scorer.score(load_dataset("mnist", "test", data_dir=mnist_fixture_dir, limit=50).images)
    for i, e in enumerate(images):  # the share of the 50 reference digits scoring lower. Image i is test digit i:
        others = torch.arange(50) != i  # its own copy there differs from it by batch rounding only, so it may
        below = int((ref_scores["log p"][others] < direct["log p"][i]).sum())  # count 0, 1/2 or 1 of the 50
        assert below / 50 <= e["log p percentile"] <= (below + 1) / 50
    gallery = next(f for f in report.sections[0].figures if f.name == "most_mnist_like")
    assert gallery.data["images"] == [e["image"] for e in sorted(images, key=lambda e: e["WAIC"])]


def test_score_folder_without_reference_data_says_so(tiny_models, mnist, tmp_path, monkeypatch):
    monkeypatch.delenv("PPL_AUDIT_DATA", raising=False)
    report = score_folder(_folder(tmp_path, mnist), iwae_samples=2, device="cpu", models={"vae": tiny_models["vae"]})
    assert "percentiles are absent" in " ".join(report.sections[0].paragraphs)
    assert "WAIC percentile" not in report.metrics["images"][0]


def test_bad_folders_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match="holds no image"):
        score_folder(empty, models={"vae": None})
    with pytest.raises(DataNotFoundError, match="does not exist"):
        score_folder(tmp_path / "missing", models={"vae": None})
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    np.save(wrong / "big.npy", np.zeros((2, 32, 32)))
    with pytest.raises(DataFileError, match="expected 28 x 28"):
        score_folder(wrong, models={"vae": None})
    nan = tmp_path / "nan"
    nan.mkdir()
    np.save(nan / "x.npy", np.full((1, 28, 28), np.nan))
    with pytest.raises(DataFileError, match="NaN"):
        score_folder(nan, models={"vae": None})


def test_cli_ood_on_an_empty_folder_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status = cli.main(["ood", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 2
    assert "holds no image" in capsys.readouterr().err


def test_cli_method_flag_is_refused_for_audits_without_a_sampler(tmp_path, capsys):
    status = cli.main(["run", str(OOD_FILE), "--method", "smc", "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 2
    assert "--method does not apply" in capsys.readouterr().err


def test_each_ensemble_runs_once_per_batch():
    calls = {"log_likelihood": 0, "critic_scores": 0, "rate": 0}

    class Counting(_Brightness):
        def log_likelihood(self, x, num_samples=16, generator=None, common_draws=False):
            calls["log_likelihood"] += 1
            return super().log_likelihood(x)

        def critic_scores(self, x):
            calls["critic_scores"] += 1
            return super().critic_scores(x)

        def rate(self, x):
            calls["rate"] += 1
            return super().rate(x)

    fake = Counting()
    EnsembleScorer(fake, gan=fake).score(torch.rand(4, 1, 28, 28))
    assert calls == {"log_likelihood": 1, "critic_scores": 1, "rate": 1}


def test_the_readme_example_folder_loads():
    from ppl_audit.data import load_image_folder

    images, names = load_image_folder(REPO / "tests" / "fixtures" / "ood-images")
    assert images.shape == (15, 1, 28, 28) and names[0] == "mnist-digits.npy[0]"
    assert names[-1] == "notmnist-letters.npy[9]" and 0 <= float(images.min()) and float(images.max()) <= 1


def _user_classifier_file(tmp_path, side: int):
    """A 3-class classifier of ``side`` x ``side`` grey images, saved as a torch.export program."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(side * side, 3)).eval()
    example = (torch.zeros(2, 1, side, side),)
    program = torch.export.export(net, example, dynamic_shapes=({0: torch.export.Dim("n", min=1)},))
    torch.export.save(program, str(tmp_path / "clf.pt2"))
    return net, tmp_path / "clf.pt2"


def test_score_folder_adds_a_users_classifiers_max_p_column(tiny_models, mnist, mnist_fixture_dir, tmp_path):
    net, path = _user_classifier_file(tmp_path, 28)
    report = score_folder(_folder(tmp_path, mnist), num_reference=20, data_dir=mnist_fixture_dir, iwae_samples=2,
                          device="cpu", models={"vae": tiny_models["vae"]}, classifier=str(path))
    with torch.no_grad():
        expected = 1 - torch.softmax(net(mnist[:4]), -1).max(-1).values  # the files hold test digits 0-3
    images = report.metrics["images"]
    assert [e["1 - max p"] for e in images] == pytest.approx(expected.tolist(), abs=1e-3)  # 8-bit round trip
    assert all(0 <= e["1 - max p percentile"] <= 1 for e in images)


def test_score_folder_names_the_shapes_of_a_classifier_that_cannot_take_the_images(tiny_models, mnist, tmp_path):
    _, path = _user_classifier_file(tmp_path, 32)
    folder, models = _folder(tmp_path, mnist), {"vae": tiny_models["vae"]}
    with pytest.raises(InvalidInputError, match=r"the folder's images are \(1, 28, 28\) .* \(1, 32, 32\)"):
        score_folder(folder, num_reference=0, device="cpu", models=models, classifier=str(path))
    report = score_folder(folder, num_reference=0, iwae_samples=2, device="cpu", models=models, classifier=str(path),
                          resize=True)
    assert len(report.metrics["images"]) == 4
    with pytest.raises(InvalidInputError, match="'lenet-classifier' or .* model card is needed; 'mnist-vae' is"):
        score_folder(folder, num_reference=0, device="cpu", models=models, classifier="mnist-vae")
