"""The user's own classifier and prior (issue 23): ONNX, torch.export (.pt2) and entry points, loaded safely.

Tolerances: ONNX and torch run the same float32 graph with different kernels; their softmax outputs agree to
~1e-7 here, so 1e-5 leaves room for other CPUs' kernels while catching any real mismatch (a wrong weight
moves probabilities by 1e-2 or more).
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ppl_audit as pa
from ppl_audit.classifiers.external import check_input_compatible, load_classifier_file, load_prior_file
from ppl_audit.errors import AuditFileError, InvalidInputError, ModelOutputError, WeightsError

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx and onnxruntime are not installed: pip install -e .[onnx]")
ATOL = 1e-5  # see the module docstring


def tiny_net(seed: int = 0, channels: int = 1, classes: int = 3, softmax: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(channels, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, classes)]
    return nn.Sequential(*layers, *([nn.Softmax(-1)] if softmax else [])).eval()


def tiny_decoder(seed: int = 0, latent: int = 2, sigmoid: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(latent, 28 * 28), *([nn.Sigmoid()] if sigmoid else []), nn.Unflatten(1, (1, 28, 28))]
    return nn.Sequential(*layers).eval()


def export_onnx(module: nn.Module, example: torch.Tensor, path, *, dynamic_batch=True, metadata=None):
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}} if dynamic_batch else None)
    if metadata:
        import onnx

        model = onnx.load(str(path))
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(path))
    return path


def export_pt2(module: nn.Module, example: torch.Tensor, path):
    program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("n", min=1)},))
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("external")
    net, x = tiny_net(), torch.rand(2, 1, 28, 28)
    made = {"pt2": export_pt2(net, x, root / "net.pt2"),
            "decoder.pt2": export_pt2(tiny_decoder(), torch.zeros(2, 2), root / "decoder.pt2")}
    if HAS_ONNX:
        made["onnx"] = export_onnx(net, x, root / "net.onnx")
        made["decoder.onnx"] = export_onnx(tiny_decoder(), torch.zeros(2, 2), root / "decoder.onnx")
    return made


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize("kind", [pytest.param("onnx", marks=needs_onnx), "pt2"])
def test_file_classifier_matches_the_torch_module(files, kind):
    clf = load_classifier_file(files[kind])
    x = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # > one chunk of 256
    with torch.no_grad():
        expected = torch.softmax(tiny_net()(x), -1)
    assert clf.output == "logits" and clf.class_names == ("0", "1", "2") and clf.input_shape == (1, 28, 28)
    assert clf.differentiable is (kind == "pt2")
    assert torch.allclose(clf.probs(x), expected, atol=ATOL)


def test_pt2_classifier_is_differentiable(files):
    clf = load_classifier_file(files["pt2"], class_names=["a", "b", "c"])
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    clf.probs(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@needs_onnx
@pytest.mark.parametrize("names", ["cat, dog,bird", '["cat", "dog", "bird"]'])
def test_onnx_metadata_names_and_a_fixed_batch_of_one(tmp_path, names):
    path = export_onnx(tiny_net(), torch.rand(1, 1, 28, 28), tmp_path / "fixed.onnx", dynamic_batch=False,
                       metadata={"class_names": names})
    clf = load_classifier_file(path)
    assert clf.class_names == ("cat", "dog", "bird") and clf.fixed_batch == 1
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(clf.probs(x), torch.softmax(tiny_net()(x), -1), atol=ATOL)


@needs_onnx
def test_output_modes(tmp_path):
    path = export_onnx(tiny_net(softmax=True), torch.rand(2, 1, 28, 28), tmp_path / "soft.onnx")
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        expected = tiny_net(softmax=True)(x)
    assert load_classifier_file(path).output == "probabilities"  # auto: rows already sum to 1
    assert torch.allclose(load_classifier_file(path, output="probabilities").probs(x), expected, atol=ATOL)
    logits = export_onnx(tiny_net(), torch.rand(2, 1, 28, 28), tmp_path / "logits.onnx")
    with pytest.raises(ModelOutputError) as exc:
        load_classifier_file(logits, output="probabilities")
    assert "logits.onnx" in one_line(exc)


@pytest.fixture
def entry_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import numpy as np\nimport torch\nfrom torch import nn\n\n"
        "def net():\n"
        "    torch.manual_seed(0)\n"
        "    m = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 3))\n"
        "    m.input_shape = (1, 28, 28)\n"
        "    return m\n\n"
        "def black_box():\n"
        "    return lambda x: np.tile([0.2, 0.8], (len(x), 1))\n\n"
        "def decoder():\n"
        "    torch.manual_seed(0)\n"
        "    m = nn.Sequential(nn.Linear(2, 784), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28)))\n"
        "    m.latent_dim = 2\n"
        "    return m\n\n"
        "def broken():\n"
        "    raise RuntimeError('boom')\n\n"
        "def number():\n"
        "    return 42\n\n"
        "VALUE = 3\n")
    (tmp_path / "not_importable.py").write_text("import no_such_package_for_ppl_audit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("my_models", "not_importable"):
        sys.modules.pop(name, None)


def test_entry_point_module_with_safetensors_weights(entry_module):
    from safetensors.torch import save_file

    trained = tiny_net(seed=7)  # same architecture, other weights: loading them must change the outputs
    save_file(trained.state_dict(), str(entry_module / "w.safetensors"))
    clf = load_classifier_file("my_models:net", weights=entry_module / "w.safetensors", class_names=["a", "b", "c"])
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(clf.probs(x), torch.softmax(trained(x), -1), atol=1e-6)
    assert clf.differentiable and clf.input_shape == (1, 28, 28)
    save_file({"0.weight": torch.zeros(4, 1, 3, 3)}, str(entry_module / "partial.safetensors"))
    with pytest.raises(WeightsError) as exc:
        load_classifier_file("my_models:net", weights=entry_module / "partial.safetensors")
    assert "3 missing" in one_line(exc)


def test_entry_point_plain_callable_is_a_black_box(entry_module):
    clf = load_classifier_file("my_models:black_box", input_shape=(1, 8, 8), class_names=["no", "yes"])
    assert clf.output == "probabilities" and not clf.differentiable
    assert torch.allclose(clf.probs(torch.zeros(3, 1, 8, 8)), torch.tensor([[0.2, 0.8]] * 3))


def test_resize_adapts_other_images_and_its_absence_is_one_line(files):
    clf = load_classifier_file(files["pt2"], resize=True)
    x = torch.rand(4, 1, 64, 64)
    small = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(clf.probs(x), clf.probs(small), atol=1e-6)
    assert torch.allclose(clf.probs(x.expand(-1, 3, -1, -1)), clf.probs(small), atol=1e-6)  # 3 -> 1 channel mean
    strict = load_classifier_file(files["pt2"])
    with pytest.raises(InvalidInputError) as exc:
        check_input_compatible((1, 64, 64), strict)
    assert one_line(exc) == ("the prior's images are (1, 64, 64) but classifier net.pt2 takes (1, 28, 28); "
                             "declare resize to adapt them")
    with pytest.raises(InvalidInputError, match="declare resize"):
        strict.probs(x)
    with pytest.raises(InvalidInputError, match="only 1 <-> 3"):
        clf.check_input((2, 64, 64))


class Payload:
    """Unpickling this creates a marker file: the proof that a loader ran code from the model file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def rewrite_zip(src, dst, edit):
    """Copy a zip, passing each entry ``(name, bytes)`` through ``edit`` (None drops it); ``edit(None, None)``
    may return extra ``(name, bytes)`` entries to append."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as b:
        for info in a.infolist():
            data = edit(info.filename, a.read(info.filename))
            if data is not None:
                b.writestr(info.filename, data)
        for name, data in edit(None, None) or ():
            b.writestr(name, data)
    return dst


def _json_edit(change):
    def edit(name, data):
        if name is None or not name.endswith(change[0]):
            return data
        tree = json.loads(data)
        change[1](tree)
        return json.dumps(tree).encode()
    return edit


def test_pt2_pickle_payloads_are_refused_or_inert(files, tmp_path):
    marker = tmp_path / "MARKER"
    evil = pickle.dumps(Payload(marker))

    def pickled_weight(tree):
        first = next(iter(tree["config"].values()))
        first["use_pickle"] = True

    def weight_file(name, data):
        return data if name is None or not name.endswith("data/weights/weight_0") else evil

    refused = {
        "pickled weight": lambda n, d: weight_file(n, _json_edit(("model_weights_config.json", pickled_weight))(n, d)),
        "legacy weights": lambda n, d: [("net/data/weights/model.pt", evil)] if n is None else d,
        "aotinductor": lambda n, d: [("net/data/aotinductor/model/x.so", b"\x7fELF")] if n is None else d,
        "code in a shape": _json_edit(("models/model.json", lambda t: t["range_constraints"].update(
            {"__import__('os').system('touch x')": {"min_val": 1, "max_val": None}}))),
    }
    for why, edit in refused.items():
        path = rewrite_zip(files["pt2"], tmp_path / f"{why.replace(' ', '_')}.pt2", edit)
        with pytest.raises(AuditFileError) as exc:
            load_classifier_file(path)
        assert "refused" in one_line(exc), why
    # Inert: the sample inputs (which torch.export.load unpickles) are never read; guards (exec'd) are dropped.
    inert = rewrite_zip(files["pt2"], tmp_path / "inert.pt2", lambda n, d: evil if n and n.endswith(
        "sample_inputs/model.pt") else _json_edit(("models/model.json", lambda t: t.update(
            guards_code=[f"open({str(marker)!r}, 'w')"])))(n, d))
    assert load_classifier_file(inert).num_classes == 3
    assert not marker.exists()


def test_onnx_file_carrying_a_pickle_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.onnx"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises((AuditFileError, InvalidInputError)) as exc:  # InvalidInputError: onnxruntime missing
        load_classifier_file(path)
    assert "evil.onnx" in one_line(exc) or "onnx" in one_line(exc)
    assert not marker.exists()


def bad_sources(tmp_path, files):
    (tmp_path / "truncated.onnx").write_bytes(files["onnx"].read_bytes()[:300]) if "onnx" in files else None
    (tmp_path / "truncated.pt2").write_bytes(files["pt2"].read_bytes()[:2000])
    (tmp_path / "junk.pt2").write_bytes(b"not a zip at all")
    return tmp_path


@pytest.mark.parametrize("source,kwargs,error,words", [
    ("missing.onnx", {}, AuditFileError, "does not exist"),
    ("missing.pt2", {}, AuditFileError, "does not exist"),
    pytest.param("truncated.onnx", {}, AuditFileError, "truncated.onnx is not a readable ONNX", marks=needs_onnx),
    ("truncated.pt2", {}, AuditFileError, "truncated.pt2 is not a readable"),
    ("junk.pt2", {}, AuditFileError, "junk.pt2 is not a readable"),
    ("model.h5", {}, InvalidInputError, "must be a .onnx or .pt2 file or an entry point"),
    ("not_importable:f", {}, InvalidInputError, "does not import: ModuleNotFoundError"),
    ("my_models:nope", {}, InvalidInputError, "has no attribute nope"),
    ("my_models:VALUE", {}, InvalidInputError, "not a callable factory"),
    ("my_models:number", {}, InvalidInputError, "returned a int"),
    ("my_models:broken", {}, InvalidInputError, "raised RuntimeError: boom"),
    ("my_models:net", {"class_names": ["a", "b"]}, InvalidInputError, "2 class names given but classifier"),
    ("my_models:black_box", {}, InvalidInputError, "declare input_shape"),
    ("my_models:net", {"output": "maybe"}, InvalidInputError, "output must be one of"),
])
def test_bad_sources_are_one_line_errors(tmp_path, files, entry_module, monkeypatch, source, kwargs, error, words):
    monkeypatch.chdir(bad_sources(tmp_path, files))
    with pytest.raises(error) as exc:
        load_classifier_file(source, **kwargs)
    assert words in one_line(exc)


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x08\x07")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(InvalidInputError) as exc:
        load_classifier_file(path)
    assert "pip install -e .[onnx]" in one_line(exc)


@pytest.mark.parametrize("kind", [pytest.param("decoder.onnx", marks=needs_onnx), "decoder.pt2"])
def test_decoder_file_is_a_prior_the_sampler_runs_on(files, kind):
    prior = load_prior_file(files[kind])
    assert prior.latent_dim == 2 and prior.image_shape == (1, 28, 28)
    assert prior.differentiable is (kind == "decoder.pt2")
    z = prior.sample(5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(prior.decode(z), tiny_decoder()(z), atol=ATOL)
    clf = load_classifier_file(files["pt2"])
    res = pa.sample_level_set(prior, clf, [0.2, 0.4, 0.4], method="smc", num_particles=64, num_samples=16, seed=0,
                              device="cpu")
    assert res.latents.shape == (16, 2) and res.images.shape == (16, 1, 28, 28) and res.probs.shape == (16, 3)


def test_uniform_latent_prior(entry_module, files):
    prior = load_prior_file("my_models:decoder", latent=("uniform", -2.0, 2.0))
    z = prior.sample(200, generator=torch.Generator().manual_seed(0))
    assert bool(((z >= -2) & (z <= 2)).all()) and float(z.std()) > 0.9  # a uniform on [-2, 2] has std 1.15
    assert prior.log_prob(torch.tensor([[3.0, 0.0]])).item() == -np.inf
    res = pa.sample_level_set(prior, load_classifier_file(files["pt2"]), [0.2, 0.4, 0.4], method="smc",
                              num_particles=64, num_samples=16, seed=0, device="cpu")
    assert bool(((res.latents >= -2) & (res.latents <= 2)).all())


@needs_onnx
def test_an_onnx_decoder_names_its_uniform_latent_in_its_metadata(tmp_path):
    path = export_onnx(tiny_decoder(), torch.zeros(2, 2), tmp_path / "box.onnx", metadata={"latent": "uniform,-2,2"})
    z = load_prior_file(path).sample(200, generator=torch.Generator().manual_seed(0))
    assert bool(((z >= -2) & (z <= 2)).all()) and float(z.std()) > 0.9  # a uniform on [-2, 2] has std 1.15
    assert float(load_prior_file(path, latent=("uniform", 0.0, 1.0)).sample(50).max()) <= 1  # an argument wins
    for bad in ("uniform,2,-2", "cauchy", "uniform,a,b"):
        path = export_onnx(tiny_decoder(), torch.zeros(2, 2), tmp_path / "bad.onnx", metadata={"latent": bad})
        with pytest.raises(AuditFileError, match="is not 'normal' or 'uniform,LOW,HIGH'"):
            load_prior_file(path)


def test_decoder_outside_the_unit_interval_is_one_line(tmp_path):
    path = export_pt2(tiny_decoder(sigmoid=False), torch.zeros(2, 2), tmp_path / "raw.pt2")
    with pytest.raises(ModelOutputError) as exc:
        load_prior_file(path)
    assert "outside [0, 1]" in one_line(exc) and "raw.pt2" in one_line(exc)
    with pytest.raises(InvalidInputError, match="a decoder takes latents"):
        load_prior_file(export_pt2(tiny_net(), torch.rand(2, 1, 28, 28), tmp_path / "clf.pt2"))

