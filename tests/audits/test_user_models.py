"""Level-set audits of a user's classifier and prior: the ``user`` family of ``audits.worlds``."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ppl_audit import cli
from ppl_audit.audits import levelset
from ppl_audit.audits import worlds as registry
from ppl_audit.audits.levelset import LevelSetAuditSpec, TargetSpec
from ppl_audit.classifiers.cnn import PatchCNN, TorchClassifier
from ppl_audit.errors import InvalidInputError
from ppl_audit.priors import HouseRocketWorld
from ppl_audit.report import write_report
from ppl_audit.sampling import sample_level_set
from tests.test_cli import assert_nothing_written, assert_user_error

TARGETS = (TargetSpec("a-or-b", (0.45, 0.45, 0.1), 10.0),)
TINY = dict(num_particles=64, num_steps=8, num_samples=32, num_prior_samples=50, device="cpu")


def three_class_classifier() -> TorchClassifier:
    torch.manual_seed(0)
    return TorchClassifier(PatchCNN(3, channels=4, hidden=8).eval(), ("a", "b", "c"))


@pytest.mark.parametrize("name,user", [("clf.onnx", True), ("dir/p.PT2", True), ("pkg.models:build", True),
                                       ("house-rocket-cnn", False), ("mnist-vae", False), ("a:b:c", False)])
def test_what_names_a_model_of_the_users(name, user):
    assert registry.is_model_source(name) is user


def test_a_users_classifier_audits_a_built_in_world_under_its_own_class_names(tmp_path):
    spec = LevelSetAuditSpec(classifier="pkg.models:build", worlds=("house-rocket",), targets=TARGETS,
                             classes=("a", "b", "c"), **TINY)
    assert spec.family == registry.USER and spec.class_names == ("a", "b", "c")
    report = levelset.run(spec, seed=0, classifier=three_class_classifier())
    doc = json.loads((write_report(report, tmp_path / "r") / "report.json").read_text())
    entry = doc["metrics"]["worlds"]["house-rocket"]["targets"]["a-or-b"]
    assert entry["paper_delta"] is None and 0 <= entry["delta"] <= 1  # the paper measured its LeNet-5, not this
    assert doc["metrics"]["classifier"]["class_names"] == ["a", "b", "c"]
    assert doc["provenance"]["spec"]["classes"] == ["a", "b", "c"]


def test_a_users_classifier_names_its_classes_when_the_spec_does_not():
    spec = LevelSetAuditSpec(classifier="clf.onnx", worlds=("house-rocket",), targets=TARGETS, **TINY)
    results = levelset.evaluate(spec, seed=0, classifier=three_class_classifier())
    assert results.spec.classes == ("a", "b", "c")


def test_classes_that_disagree_with_the_model_are_refused():
    spec = LevelSetAuditSpec(classifier="clf.onnx", worlds=("house-rocket",), targets=TARGETS,
                             classes=("x", "y", "z"), **TINY)
    with pytest.raises(InvalidInputError, match=r"classifier has classes \['a', 'b', 'c'\]"):
        levelset.evaluate(spec, seed=0, classifier=three_class_classifier())


def test_built_in_reports_do_not_record_the_user_fields():
    assert "classes" not in LevelSetAuditSpec().to_dict() and "resize" not in LevelSetAuditSpec().to_dict()


@pytest.mark.parametrize("fields,message", [
    (dict(classes=("a",)), "classes must be two or more distinct names"),
    (dict(classes=("a", "a", "b")), "classes must be two or more distinct names"),
    (dict(resize="yes"), "resize must be true or false"),
    (dict(classifier="house-rocket-cnn", resize=True), "apply to a classifier of your own"),
    (dict(targets=None), "needs targets"),
    (dict(worlds=None), "needs worlds"),
    (dict(classifier=None, worlds=("dec.onnx",)), "needs classifier"),
    (dict(worlds=("a/dec.onnx", "b/dec.pt2")), "worlds must have distinct names"),
    (dict(targets=(TargetSpec("t", (0.5, 0.5), 10.0),), classes=("a", "b", "c")), "has 2 entries"),
])
def test_what_a_users_audit_needs_is_checked_first(fields, message):
    kwargs = dict(classifier="clf.onnx", worlds=("house-rocket",), targets=TARGETS) | fields
    with pytest.raises(InvalidInputError, match=message):
        LevelSetAuditSpec(**kwargs)


def test_world_labels_are_safe_file_names():
    assert registry.world_label("../../etc/passwd.onnx") == "passwd"
    assert registry.world_label("models/.hidden.pt2") == "hidden"
    assert registry.world_label("pkg.dec:build") == "pkg.dec-build"


# --------------------------------------------------------------------------- end to end, through the CLI

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx and onnxruntime are not installed: pip install -e .[onnx]")
CLI_SIZES = ["--particles", "64", "--steps", "8", "--device", "cpu", "--quiet"]


def _renders_28(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """House/rocket renders shrunk to 28 x 28, and their classes (1 = house): a user's classifier's inputs."""
    world = HouseRocketWorld()
    z, c = world.sample_with_class(n, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return F.interpolate(world.decode(z), size=(28, 28), mode="bilinear", antialias=True), c


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    """A 28 x 28 rocket-vs-house classifier trained in seconds, and a tiny decoder, exported to .onnx and .pt2."""
    root = tmp_path_factory.mktemp("user")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 12 * 12, 2))
    x, c = _renders_28(1024, seed=0)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(net(x), c)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()
    x_test, c_test = _renders_28(512, seed=1)
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(-1) == c_test).float().mean())
    torch.manual_seed(1)
    decoder = nn.Sequential(nn.Linear(2, 28 * 28), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28))).eval()
    made = {"accuracy": accuracy}
    for name, module, example in (("net", net, x[:2]), ("decoder", decoder, torch.zeros(2, 2))):
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("n", min=1)},))
        torch.export.save(program, str(root / f"{name}.pt2"))
        made[f"{name}.pt2"] = root / f"{name}.pt2"
        if HAS_ONNX:
            with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (example,), str(root / f"{name}.onnx"), input_names=["x"],
                                  output_names=["y"], dynamo=False, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
            made[f"{name}.onnx"] = root / f"{name}.onnx"
    if HAS_ONNX:  # the ONNX file names its classes itself
        import onnx

        model = onnx.load(str(made["net.onnx"]))
        model.metadata_props.add(key="class_names", value="rocket,house")
        onnx.save(model, str(made["net.onnx"]))
    return made


def test_the_users_classifier_learns_the_world(user_models):
    assert user_models["accuracy"] > 0.85  # 60 full-batch Adam steps; the 64 x 64 card's CNN reaches ~0.98


def _audit(argv, capsys) -> tuple[int, str]:
    status = cli.main([str(a) for a in argv])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("suffix,names", [pytest.param("onnx", [], marks=needs_onnx),
                                          ("pt2", ["--class-names", "rocket,house"])])
def test_a_users_classifier_is_audited_on_the_house_rocket_world_with_a_declared_resize(suffix, names, user_models,
                                                                                        tmp_path, capsys):
    status, err = _audit(["levelset", "--classifier", user_models[f"net.{suffix}"], *names, "--resize",
                          "--target", "0.5,0.5", "--out", tmp_path / "OUT", *CLI_SIZES], capsys)
    assert status == 0, err
    doc = json.loads((tmp_path / "OUT" / "report.json").read_text())
    assert doc["metrics"]["classifier"]["class_names"] == ["rocket", "house"]
    entry = doc["metrics"]["worlds"]["house-rocket"]["targets"]["target"]
    assert entry["delta"] < 0.3 and entry["num_samples"] == 64  # a trained classifier's ambiguous set is reachable


def test_without_resize_the_shapes_are_named_and_nothing_is_written(user_models, tmp_path, capsys):
    status, err = _audit(["levelset", "--classifier", user_models["net.pt2"], "--class-names", "rocket,house",
                          "--target", "0.5,0.5", "--out", tmp_path / "OUT", *CLI_SIZES], capsys)
    assert_user_error(status, err, "(1, 64, 64)", "(1, 28, 28)", "declare resize")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("prior", [pytest.param("decoder.onnx", marks=needs_onnx), "decoder.pt2"])
def test_a_users_classifier_is_audited_on_a_users_decoder(prior, user_models, tmp_path, capsys):
    status, err = _audit(["levelset", "--classifier", user_models["net.pt2"], "--class-names", "rocket,house",
                          "--prior", user_models[prior], "--target", "0.5,0.5", "--out", tmp_path / "OUT",
                          *CLI_SIZES], capsys)
    assert status == 0, err
    doc = json.loads((tmp_path / "OUT" / "report.json").read_text())
    assert list(doc["metrics"]["worlds"]) == ["decoder"] and doc["provenance"]["spec"]["worlds"] == [
        str(user_models[prior])]


@pytest.mark.parametrize("argv,needle", [
    (["--classifier", "missing.onnx", "--class-names", "a,b"], "missing.onnx"),
    (["--classifier", "no_such_package.models:build", "--class-names", "a,b"], "no_such_package"),
    (["--prior", "missing.pt2"], "missing.pt2"),
])
def test_a_users_model_that_cannot_be_loaded_is_one_line(argv, needle, user_models, tmp_path, capsys):
    argv = [a if a != "missing.pt2" else str(tmp_path / "missing.pt2") for a in argv]
    if "--classifier" not in argv:
        argv += ["--classifier", str(user_models["net.pt2"]), "--class-names", "a,b"]
    status, err = _audit(["levelset", *argv, "--target", "0.5,0.5", "--out", tmp_path / "OUT", *CLI_SIZES], capsys)
    assert_user_error(status, err, needle)
    assert_nothing_written(tmp_path)


@needs_onnx
def test_gradient_methods_refuse_a_black_box_decoder(user_models):
    from ppl_audit.classifiers.external import load_classifier_file, load_prior_file

    prior = load_prior_file(str(user_models["decoder.onnx"]))
    classifier = load_classifier_file(str(user_models["net.pt2"]), class_names=["rocket", "house"])
    assert classifier.differentiable and not prior.differentiable
    with pytest.raises(InvalidInputError, match="the prior's decoder is a black box; use 'smc' or 'mh'"):
        sample_level_set(prior, classifier, [0.5, 0.5], method="hmc", num_particles=8, num_steps=4)


def test_a_registered_world_is_audited_by_name(monkeypatch):
    from ppl_audit.priors import make_world

    monkeypatch.setattr(registry, "_REGISTERED_WORLDS", {})
    made = []

    def make(device):
        made.append(device)
        return make_world("house-rocket", device=device)

    registry.register_world("my-renders", make)
    spec = LevelSetAuditSpec(classifier="clf.onnx", worlds=("my-renders",), targets=TARGETS, **TINY)
    results = levelset.evaluate(spec, seed=0, classifier=three_class_classifier())
    assert made and [w.name for w in results.worlds] == ["my-renders"]
    with pytest.raises(InvalidInputError, match="already registered"):
        registry.register_world("my-renders", lambda device: None)
    for bad in ("house-rocket", "../up", ""):
        with pytest.raises(InvalidInputError, match="needs a safe name"):
            registry.register_world(bad, make)


def test_an_entry_point_with_weights_and_a_declared_input_is_audited(user_models, tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    (tmp_path / "user_nets.py").write_text(
        "import torch\n\n\ndef build():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(3)
    save_file(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2)).state_dict(),
              str(tmp_path / "w.safetensors"))
    common = ["levelset", "--classifier", "user_nets:build", "--class-names", "rocket,house", "--resize",
              "--target", "0.5,0.5", *CLI_SIZES]
    status, err = _audit([*common, "--out", tmp_path / "A"], capsys)  # a Linear fixes no image shape
    assert_user_error(status, err, "input_shape")
    status, err = _audit([*common, "--weights", tmp_path / "w.safetensors", "--input-shape", "1,28,28",
                          "--output", "logits", "--out", tmp_path / "OUT"], capsys)
    assert status == 0, err
    spec = json.loads((tmp_path / "OUT" / "report.json").read_text())["provenance"]["spec"]
    assert spec["input_shape"] == [1, 28, 28] and spec["output"] == "logits" and spec["weights"].endswith("w.safetensors")


def test_the_user_classifier_flags_do_not_apply_to_model_cards(tmp_path, capsys):
    status, err = _audit(["levelset", "--output", "logits", "--target", "0.5,0.5", "--out", tmp_path / "OUT",
                          *CLI_SIZES], capsys)
    assert_user_error(status, err, "output apply to a classifier of your own")
