"""The user's own classifier and generative prior, from a file or an entry point, as the toolkit's contracts.

Three sources, named by the user:

* ``model.onnx``: run by onnxruntime as a black box (not differentiable). Its input shape ``(C, H, W)`` is
  read where static, its class names from the metadata key ``class_names`` (comma-separated or a JSON list).
* ``model.pt2``: a ``torch.export`` program, differentiable, read by this module's guarded reader (below).
* ``package.module:factory``: the user's own code, imported and called (``factory()``); an ``nn.Module``
  (differentiable; ``weights=`` a ``.safetensors`` state dict, matched strictly) or a plain callable.

Neither file format is unpickled and neither runs code from the file. ONNX is a protobuf read by
onnxruntime (no pickle; custom-op libraries load only when registered, which this module never does).
``torch.export.load`` in torch 2.13 is *not* safe on its own: it ``torch.load``\\ s the archive's sample
inputs with a ``weights_only=False`` fallback, ``torch.load(weights_only=False)``\\ s or ``pickle.loads``
any weight or constant marked ``use_pickle``, loads AOTInductor shared libraries, ``exec``\\ s the
program's ``guards_code`` and ``sympy.sympify``\\ s (``eval``) its shape expressions. So a ``.pt2`` is read
here with torch's own deserializer pieces behind checks: the zip holds only the expected entries (no
AOTInductor, no legacy pickled weights), no payload is marked ``use_pickle``, every graph target is a torch
operator, every shape expression is a plain symbolic formula, the guards are dropped and the sample
inputs are never read. Anything else is refused with a one-line :class:`~ppl_audit.errors.AuditFileError`.

Outputs: ``output="logits"`` applies a softmax, ``"probabilities"`` checks rows as they are, and
``"auto"`` (the default) decides once, on a probe batch at load time: probabilities when every probe row
is non-negative and sums to 1 within ``1e-4``, logits otherwise.

Examples
--------
>>> clf = load_classifier_file("model.onnx", class_names=["rocket", "house"])  # doctest: +SKIP
>>> clf.input_shape, clf.differentiable  # doctest: +SKIP
((1, 64, 64), False)
>>> prior = load_prior_file("decoder.pt2")  # doctest: +SKIP
>>> sample_level_set(prior, clf, [0.5, 0.5], method="smc")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import types
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.classifiers.base import (
    DEFAULT_CHUNK_SIZE,
    Classifier,
    as_probability_tensor,
    check_probabilities,
)
from ppl_audit.errors import AuditFileError, InvalidInputError, ModelOutputError, WeightsError
from ppl_audit.priors.decoder import DecoderPrior

OUTPUT_MODES = ("auto", "logits", "probabilities")
AUTO_ROW_TOLERANCE = 1e-4  # "auto": rows summing to 1 this closely are probabilities; float32 softmax is ~1e-6
PROBE_SEED = 0  # the load-time probe batch is the same on every load
PROBE_SIZE = 4  # images (or latents) in the load-time probe
ONNX_EXTRA = "pip install -e .[onnx]"
MODEL_FILE_SUFFIXES = (".onnx", ".pt2")  # the file formats read here, neither unpickled
ENTRY_POINT = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

# .pt2 entries (under the archive's one root folder) that the guarded reader accepts; all else is refused
PT2_FIXED_ENTRIES = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
                     "models/model.json", "data/weights/model_weights_config.json",
                     "data/constants/model_constants_config.json", "data/sample_inputs/model.pt"}
PT2_OPERATORS = ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "eq", "ne", "lt",
                 "le", "gt", "ge", "and_", "or_", "not_", "sym_float", "sym_int", "sym_max", "sym_min")
# names a symbolic shape expression may use; symbols themselves look like s0, u12
SYMPY_NAMES = {"Symbol", "Integer", "Rational", "Float", "True", "False", "positive", "integer", "real",
               "nonnegative", "negative", "finite", "Max", "Min", "Abs", "FloorDiv", "ModularIndexing", "Where",
               "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift",
               "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "TruncToFloat", "TruncToInt",
               "RoundToInt", "RoundDecimal", "ToFloat", "Identity"}
SYMBOL_NAME = re.compile(r"^[a-z]+\d+$")


# ---------------------------------------------------------------------------------------------- sources


def is_model_source(name) -> bool:
    """Whether ``name`` names a model file or an entry point this module reads (by its form alone).

    Examples
    --------
    >>> is_model_source("clf.onnx"), is_model_source("my_pkg.models:build"), is_model_source("mnist-lenet5")
    (True, True, False)
    """
    if not isinstance(name, (str, os.PathLike)):
        return False
    text = os.fspath(name)
    return Path(text).suffix.lower() in MODEL_FILE_SUFFIXES or (isinstance(name, str) and bool(ENTRY_POINT.match(text)))


def _source_kind(source) -> str:
    """``"onnx"``, ``"pt2"`` or ``"entry"``; else a one-line :class:`InvalidInputError`."""
    if isinstance(source, os.PathLike) or isinstance(source, str):
        text = os.fspath(source)
        suffix = Path(text).suffix.lower()
        if suffix in MODEL_FILE_SUFFIXES:
            if not Path(text).is_file():
                why = "is not a file" if Path(text).exists() else "does not exist"
                raise AuditFileError(f"model file {text} {why}")
            return suffix[1:]
        if isinstance(source, str) and ENTRY_POINT.match(text):
            return "entry"
    raise InvalidInputError(f"model source must be a .onnx or .pt2 file or an entry point package.module:factory, "
                            f"got {source!r}"[:240])


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise InvalidInputError(f"reading .onnx models needs onnxruntime, which is not installed: {ONNX_EXTRA}") \
            from None
    return onnxruntime


def _onnx_session(path: Path, device: torch.device):
    """An onnxruntime session on ``path``: CUDA first where asked for and available, else the CPU."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    # as many threads as torch uses: ORT's default (one per core) would fight torch on a shared machine
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
        raise AuditFileError(f"{path.name} is not a readable ONNX model ({type(exc).__name__}: "
                             f"{_one_line(exc)})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise AuditFileError(f"{path.name} must have one input and at least one output, has {len(inputs)} and "
                             f"{len(outputs)}")
    if inputs[0].type != "tensor(float)":
        raise AuditFileError(f"{path.name} takes {inputs[0].type}; ppl-audit feeds float32 images (tensor(float))")
    return session


def _one_line(exc: BaseException, limit: int = 160) -> str:
    return " ".join(str(exc).split())[:limit]


def _static_dims(dims) -> list[int | None]:
    """A model input's dimensions with the dynamic ones (names, None, symbols) as None."""
    return [int(d) if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None for d in dims]


class _OnnxModule(nn.Module):
    """An onnxruntime session as a parameterless module: tensor in, first output as a float32 tensor out.

    It runs in numpy, so it cuts the autograd graph: a black box.
    """

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run([self.output_name], {self.input_name: array})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


# ------------------------------------------------------------------------------------ the .pt2 reader


def _refuse(path: Path, why: str):
    raise AuditFileError(f"{path.name} is refused: {why} (ppl-audit reads .pt2 files with no pickle and no code)")


def _check_pt2_layout(path: Path) -> tuple[dict, dict, dict]:
    """Open ``path`` as a zip and check it is a plain ``torch.export.save`` archive; return its JSON parts.

    Returns the model JSON, the weights config and the constants config (parsed with ``json``, which runs
    nothing). Raises a one-line :class:`AuditFileError` on anything this reader does not accept.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            roots = {n.split("/", 1)[0] for n in names}
            if len(roots) != 1 or not all("/" in n for n in names):
                _refuse(path, "not a torch.export archive (entries outside one root folder)")
            root = roots.pop() + "/"
            entries = {n[len(root):]: n for n in names}
            missing = sorted({"archive_format", "archive_version", "models/model.json",
                              "data/weights/model_weights_config.json",
                              "data/constants/model_constants_config.json"} - set(entries))
            if missing:
                _refuse(path, f"not a torch.export archive of this format (missing {', '.join(missing)})")
            model = json.loads(archive.read(entries["models/model.json"]))
            weights = json.loads(archive.read(entries["data/weights/model_weights_config.json"]))
            constants = json.loads(archive.read(entries["data/constants/model_constants_config.json"]))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise AuditFileError(f"{path.name} is not a readable .pt2 archive ({type(exc).__name__}: "
                             f"{_one_line(exc)})") from None
    allowed = set(PT2_FIXED_ENTRIES)
    for directory, config, prefix in (("data/weights/", weights, "weight_"),
                                      ("data/constants/", constants, "tensor_")):
        items = config.get("config") if isinstance(config, dict) else None
        if not isinstance(items, dict):
            _refuse(path, f"its {directory} config is not a payload table")
        for fqn, meta in items.items():
            if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
                _refuse(path, f"payload {fqn!r} is pickled")
            name = meta.get("path_name")
            if not isinstance(name, str) or not name.startswith(prefix) or "/" in name:
                _refuse(path, f"payload {fqn!r} is stored as {name!r}, not a raw tensor")
            allowed.add(directory + name)
    extra = sorted(e for e in entries if e not in allowed and not e.startswith("extra/"))
    if extra:
        _refuse(path, f"unexpected entr{'y' if len(extra) == 1 else 'ies'} {', '.join(extra[:3])}")
    _check_pt2_program(path, model)
    return model, weights, constants


def _check_pt2_program(path: Path, model: dict) -> None:
    """Every node target a torch operator, every shape expression a plain formula, no custom objects."""
    if not isinstance(model, dict) or not isinstance(model.get("graph_module"), dict):
        _refuse(path, "its model.json is not an exported program")
    for key, value in _walk(model):
        if key == "target" and isinstance(value, str):
            _check_target(path, value)
        elif key == "expr_str" and isinstance(value, str):
            _check_expression(path, value)
        elif key == "custom_obj_values" and value:
            _refuse(path, "it holds script objects (loaded by unpickling)")
    for name in (model.get("range_constraints") or {}):
        _check_expression(path, name)


def _walk(node, key=None):
    """``(key, value)`` of every entry in a parsed JSON tree."""
    yield key, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


def _check_target(path: Path, target: str) -> None:
    from torch._ops import HigherOrderOperator, OpOverload, OpOverloadPacket

    if target.startswith("_operator."):
        if target.split(".", 1)[1] not in PT2_OPERATORS:
            _refuse(path, f"graph calls {target!r}")
        return
    if not re.fullmatch(r"torch\.ops\.\w+\.\w+(\.\w+)?", target):
        _refuse(path, f"graph calls {target!r}, not a torch operator")
    resolved = torch
    for name in target.split(".")[1:]:
        resolved = getattr(resolved, name, None)  # torch.ops lookups: a registry read, no import from the file
        if resolved is None:
            _refuse(path, f"graph calls {target!r}, an operator this torch does not have")
    if not isinstance(resolved, (OpOverload, OpOverloadPacket, HigherOrderOperator)):
        _refuse(path, f"graph calls {target!r}, not a torch operator")


def _check_expression(path: Path, text: str) -> None:
    """A symbolic shape formula (sympify evaluates it): only known names, symbols, numbers and arithmetic."""
    ok = re.fullmatch(r"[\w\s+\-*/%(),.'=<>]*", text) and "__" not in text and all(
        token in SYMPY_NAMES or SYMBOL_NAME.match(token) for token in re.findall(r"[A-Za-z_]\w*", text))
    if not ok:
        _refuse(path, f"shape expression {text[:60]!r} is not a plain formula")


def _load_pt2(path: Path) -> nn.Module:
    """A ``.pt2`` program as a module, after :func:`_check_pt2_layout`; no pickle, no code from the file."""
    model, _, _ = _check_pt2_layout(path)
    model["guards_code"] = []  # Python source that ep.module() would exec; inputs are shape-checked here instead
    try:  # torch's own deserializer pieces, minus the parts that unpickle (sample inputs, pickled payloads)
        from torch._export.serde import schema
        from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass
        from torch.export.pt2_archive._package import PT2ArchiveReader, _load_constants, _load_state_dict
    except ImportError as exc:
        raise AuditFileError(f"{path.name}: this torch ({torch.__version__}) lacks the .pt2 reader ppl-audit "
                             f"guards ({_one_line(exc)}); export the model to ONNX instead") from None
    try:
        with PT2ArchiveReader(str(path)) as reader:
            state_dict = _load_state_dict(reader, "model")
            constants = _load_constants(reader, "model")
        if not isinstance(state_dict, dict) or not isinstance(constants, dict):  # a legacy pickled payload
            _refuse(path, "its weights are in the legacy pickled format")
        program = _dict_to_dataclass(schema.ExportedProgram, model)
        exported = ExportedProgramDeserializer().deserialize(program, state_dict, constants, None)
        module = exported.module()
    except AuditFileError:
        raise
    except Exception as exc:  # a truncated or hand-edited archive fails anywhere inside torch's deserializer
        raise AuditFileError(f"{path.name} is not a readable .pt2 program ({type(exc).__name__}: "
                             f"{_one_line(exc)})") from None
    module.ppl_audit_input_dims = _pt2_input_dims(exported)
    # An exported graph is fixed, so train/eval change nothing in it; torch makes them raise, which would
    # break every caller that puts a model in eval mode (DecoderPrior, TorchClassifier).
    module.train = types.MethodType(lambda self, mode=True: self, module)
    module.eval = types.MethodType(lambda self: self, module)
    return module


def _pt2_input_dims(exported) -> list[int | None] | None:
    """The one user input's dimensions, dynamic ones as None; None if there is not exactly one input."""
    users = set(exported.graph_signature.user_inputs)
    shapes = [node.meta.get("val") for node in exported.graph.nodes if node.op == "placeholder" and node.name in users]
    if len(shapes) != 1 or not isinstance(shapes[0], torch.Tensor):
        return None
    return _static_dims(shapes[0].shape)


# ---------------------------------------------------------------------------------------- entry points


def _load_entry_point(spec: str, weights) -> object:
    """Import ``package.module:factory``, call ``factory()``, and load ``weights`` into a module result."""
    module_name, _, attribute = spec.partition(":")
    try:
        target = importlib.import_module(module_name)
    except Exception as exc:  # the user's module failing at import, whatever it raises
        raise InvalidInputError(f"entry point {spec} does not import: {type(exc).__name__}: {_one_line(exc)}") \
            from None
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise InvalidInputError(f"entry point {spec}: {module_name} has no attribute {attribute}")
        target = getattr(target, name)
    if not callable(target):
        raise InvalidInputError(f"entry point {spec} is a {type(target).__name__}, not a callable factory")
    try:
        made = target()
    except Exception as exc:
        raise InvalidInputError(f"entry point {spec} raised {type(exc).__name__}: {_one_line(exc)}") from None
    if not callable(made):
        raise InvalidInputError(f"entry point {spec} returned a {type(made).__name__}; expected a torch.nn.Module "
                                "or a callable")
    if weights is not None:
        if not isinstance(made, nn.Module):
            raise InvalidInputError(f"weights= needs the entry point to return a torch.nn.Module; {spec} returned "
                                    f"a {type(made).__name__}")
        _load_safetensors(made, Path(weights))
    return made


def _load_safetensors(module: nn.Module, path: Path) -> None:
    """Load a ``.safetensors`` state dict into ``module``, strictly (never ``torch.load``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise InvalidInputError(f"weights must be a .safetensors file, got {path.name}")
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path.name} is not a readable safetensors file ({_one_line(exc)})") from None
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(f"{path.name} does not match the module: {len(result.missing_keys)} missing "
                           f"({', '.join(result.missing_keys[:3])}), {len(result.unexpected_keys)} unexpected "
                           f"({', '.join(result.unexpected_keys[:3])})")


def _open(source, weights, device: torch.device) -> tuple[Callable, str, list[int | None] | None, bool, dict]:
    """``(model, name, input dims or None, differentiable, metadata)`` of any source."""
    kind = _source_kind(source)
    if kind != "entry" and weights is not None:
        raise InvalidInputError(f"weights= is for entry points; {Path(source).name} carries its own weights")
    if kind == "onnx":
        path = Path(source)
        session = _onnx_session(path, device)
        meta = dict(session.get_modelmeta().custom_metadata_map)
        return _OnnxModule(session), path.name, _static_dims(session.get_inputs()[0].shape), False, meta
    if kind == "pt2":
        path = Path(source)
        module = _load_pt2(path).to(device)
        return module, path.name, module.ppl_audit_input_dims, True, {}
    made = _load_entry_point(source, weights)
    dims = getattr(made, "input_shape", None)
    dims = [None, *dims] if isinstance(dims, (tuple, list)) else None
    if isinstance(made, nn.Module):
        made = made.to(device).eval()
    return made, source, dims, isinstance(made, nn.Module), {}


def _fixed_batch(dims) -> int | None:
    """A static batch dimension (models exported for batch 1), else None."""
    return dims[0] if dims and dims[0] is not None else None


def _run_chunked(fn: Callable, x: torch.Tensor, chunk_size: int, fixed: int | None) -> list[torch.Tensor]:
    """``fn`` on ``x`` in chunks; with a fixed batch size, chunks of that size, the last one zero-padded."""
    if fixed is None:
        return [fn(chunk) for chunk in x.split(chunk_size)]
    outs = []
    for chunk in x.split(fixed):
        n = chunk.shape[0]
        if n < fixed:  # pad the remainder to the model's batch; the padded rows are dropped
            chunk = torch.cat([chunk, chunk.new_zeros((fixed - n, *chunk.shape[1:]))])
        outs.append(fn(chunk)[:n])
    return outs


# --------------------------------------------------------------------------------------- the classifier


class ExternalClassifier(Classifier):
    """A user's model as a :class:`~ppl_audit.classifiers.base.Classifier`; made by :func:`load_classifier_file`.

    Attributes
    ----------
    name : str
        The file's name or the entry point, named in every error.
    input_shape : (int, int, int)
        ``(C, H, W)`` the model takes.
    resize : bool
        Whether images of another shape are adapted (bilinear, antialiased; 1 <-> 3 channels).
    output : {"logits", "probabilities"}
        What the model returns ("auto" resolved at load time).
    differentiable : bool
        True for ``.pt2`` programs and ``nn.Module`` entry points; ONNX and plain callables are black boxes.

    Examples
    --------
    >>> from torch import nn
    >>> clf = ExternalClassifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "tiny", (1, 2, 2), ("a", "b"),
    ...                          output="logits", differentiable=True)
    >>> clf.probs(torch.zeros(3, 1, 2, 2)).shape
    torch.Size([3, 2])
    >>> try:
    ...     clf.check_input((1, 8, 8))
    ... except InvalidInputError as exc:
    ...     print(exc)
    the images are (1, 8, 8) but classifier tiny takes (1, 2, 2); declare resize to adapt them
    """

    def __init__(self, model: Callable, name: str, input_shape: Sequence[int], class_names: Sequence[str], *,
                 output: str, differentiable: bool, resize: bool = False, fixed_batch: int | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, device="cpu"):
        if output not in ("logits", "probabilities"):
            raise InvalidInputError(f"output must be 'logits' or 'probabilities' here, got {output!r}")
        self.model = model
        self.name = name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.class_names = tuple(class_names)
        self.output = output
        self.differentiable = bool(differentiable)
        self.resize = bool(resize)
        self.fixed_batch = fixed_batch
        self.chunk_size = int(chunk_size)
        self.device = resolve_device(device)

    def check_input(self, image_shape: Sequence[int], *, what: str = "the images") -> None:
        """Raise a one-line :class:`InvalidInputError` unless images of ``image_shape`` ``(C, H, W)`` can be fed.

        The audit layer calls it before sampling, so a mismatch fails before any work.
        """
        shape = tuple(int(s) for s in image_shape)
        if shape == self.input_shape:
            return
        if len(shape) != 3:
            raise InvalidInputError(f"{what} have shape {shape}; classifier {self.name} takes (C, H, W) = "
                                    f"{self.input_shape}")
        if not self.resize:
            raise InvalidInputError(f"{what} are {shape} but classifier {self.name} takes {self.input_shape}; "
                                    "declare resize to adapt them")
        if shape[0] != self.input_shape[0] and {shape[0], self.input_shape[0]} != {1, 3}:
            raise InvalidInputError(f"{what} have {shape[0]} channels but classifier {self.name} takes "
                                    f"{self.input_shape[0]}; resize converts only 1 <-> 3 channels")

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the model's input: checked, channels converted and resized when :attr:`resize` allows."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise InvalidInputError(f"classifier {self.name} takes images (N, C, H, W), got "
                                    f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        self.check_input(x.shape[1:])
        x = x.to(torch.float32)
        c, h, w = self.input_shape
        if x.shape[1] != c:  # 1 -> 3 repeats the grey channel; 3 -> 1 takes the channel mean
            x = x.expand(-1, c, -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
        if tuple(x.shape[2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return x

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own output ``(N, K)`` on adapted images, chunked, as a float tensor on ``x``'s device."""
        def run(chunk):
            try:
                out = self.model(chunk.to(self.device))
            except Exception as exc:  # the user's model failing: one line naming it
                raise ModelOutputError(f"classifier {self.name} raised {type(exc).__name__}: "
                                       f"{_one_line(exc)}") from None
            return as_probability_tensor(out, self.name, chunk.shape[0]).to(x.device, torch.float32)

        outs = _run_chunked(run, x, self.chunk_size, self.fixed_batch)
        return torch.cat(outs) if outs else x.new_zeros((0, self.num_classes))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else torch.float32
        out = self.raw(self.adapt(x))
        if self.output == "logits":
            if out.ndim != 2:
                raise ModelOutputError(f"classifier {self.name} returned shape {tuple(out.shape)}, expected "
                                       f"({x.shape[0]}, {self.num_classes})")
            out = torch.softmax(out, dim=-1)
        try:
            check_probabilities(out, x.shape[0], self.num_classes)
        except ModelOutputError as exc:
            raise ModelOutputError(f"{exc} (classifier {self.name})") from None
        return out.to(out_dtype)

    def __repr__(self) -> str:
        return (f"ExternalClassifier({self.name}, input_shape={self.input_shape}, classes={self.class_names}, "
                f"output={self.output}, differentiable={self.differentiable})")


def _input_shape(name: str, dims, declared, what: str = "input_shape") -> tuple[int, ...]:
    """The model's non-batch dimensions: static ones from the model, the rest declared; they must agree."""
    model = dims[1:] if dims else None
    if declared is not None:
        declared = tuple(declared)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in declared):
            raise InvalidInputError(f"{what} must be positive integers, got {declared!r}")
        if model is not None and (len(model) != len(declared) or any(
                m is not None and m != d for m, d in zip(model, declared))):
            shown = tuple("?" if m is None else m for m in model)
            raise InvalidInputError(f"{what} {declared} disagrees with {name}, which takes {shown}")
        return declared
    if model is None or any(m is None for m in model):
        shown = "unknown" if model is None else str(tuple("?" if m is None else m for m in model))
        raise InvalidInputError(f"{name} does not fix its input shape ({shown}); declare {what}")
    return tuple(model)


def _metadata_class_names(name: str, meta: dict) -> list[str] | None:
    text = meta.get("class_names")
    if text is None:
        return None
    try:
        names = json.loads(text) if text.lstrip().startswith("[") else [s.strip() for s in text.split(",")]
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(s, str) and s for s in names):
        raise AuditFileError(f"{name}: metadata class_names {text[:80]!r} is not a comma-separated or JSON list")
    return names


def _probe(shape: Sequence[int], n: int = PROBE_SIZE) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(PROBE_SEED))


def _resolve_output(name: str, output: str, out: torch.Tensor) -> str:
    """``"auto"`` as "probabilities" when every probe row is a probability vector within 1e-4, else "logits"."""
    if output != "auto":
        return output
    rows_ok = bool((out >= 0).all()) and bool(((out.sum(-1) - 1).abs() <= AUTO_ROW_TOLERANCE).all())
    return "probabilities" if rows_ok else "logits"


def load_classifier_file(source, *, class_names: Sequence[str] | None = None,
                         input_shape: Sequence[int] | None = None, output: str = "auto", resize=False,
                         weights=None, device="cpu") -> ExternalClassifier:
    """Load a user's classifier from a ``.onnx``/``.pt2`` file or a ``package.module:factory`` entry point.

    Parameters
    ----------
    source : str or path-like
        ``model.onnx`` (onnxruntime, black box), ``model.pt2`` (``torch.export``, differentiable) or
        ``package.module:factory`` (imported and called: an ``nn.Module`` or a callable on ``(N, C, H, W)``).
    class_names : sequence of str, optional
        The ``K`` classes in output order; default the ONNX metadata ``class_names``, else ``"0"`` .. ``"K-1"``.
        Checked against the model's output width on a probe batch.
    input_shape : (int, int, int), optional
        ``(C, H, W)`` the model takes; needed where the model does not fix it (entry points without an
        ``input_shape`` attribute, dynamic ONNX/``.pt2`` inputs).
    output : {"auto", "logits", "probabilities"}
        What the model returns. ``"auto"`` decides on the probe batch: probabilities when every row is
        non-negative and sums to 1 within 1e-4, else logits (softmaxed).
    resize : bool or (int, int)
        Adapt images of another shape: bilinear antialiased resizing and 1 <-> 3 channels. A pair
        ``(H, W)`` also declares the model's input size. Without it a mismatch is an error.
    weights : path-like, optional
        A ``.safetensors`` state dict for an entry point's module (strict match; never ``torch.load``).
    device : str or torch.device
        Where the model runs (ONNX: CUDA when asked for and onnxruntime has it, else the CPU).

    Returns
    -------
    ExternalClassifier

    Raises
    ------
    AuditFileError
        Missing, corrupt or refused file (a ``.pt2`` with pickled payloads or code).
    InvalidInputError
        Bad arguments, an entry point that does not import or returns the wrong type, class names that do
        not match the output width, onnxruntime missing.
    ModelOutputError
        The probe batch's output is not ``(N, K)`` numbers (or not probabilities when so declared).

    Examples
    --------
    >>> clf = load_classifier_file("model.onnx", class_names=["rocket", "house"], resize=True)  # doctest: +SKIP
    >>> clf.probs(torch.rand(8, 1, 64, 64)).shape  # doctest: +SKIP
    torch.Size([8, 2])
    """
    if output not in OUTPUT_MODES:
        raise InvalidInputError(f"output must be one of {', '.join(OUTPUT_MODES)}, got {output!r}")
    if isinstance(resize, (tuple, list)):
        if len(resize) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in resize):
            raise InvalidInputError(f"resize must be True, False or a size (H, W), got {resize!r}")
        if input_shape is not None and tuple(input_shape)[1:] != tuple(resize):
            raise InvalidInputError(f"resize {tuple(resize)} disagrees with input_shape {tuple(input_shape)}")
        size, resize = tuple(resize), True
    elif isinstance(resize, bool):
        size = None
    else:
        raise InvalidInputError(f"resize must be True, False or a size (H, W), got {resize!r}")
    device = resolve_device(device)
    model, name, dims, differentiable, meta = _open(source, weights, device)
    if size is not None and input_shape is None:
        channels = dims[1] if dims and len(dims) == 4 and dims[1] is not None else None
        if channels is None:
            raise InvalidInputError(f"{name} does not fix its channels; declare input_shape (C, H, W)")
        input_shape = (channels, *size)
    shape = _input_shape(name, dims, input_shape)
    if len(shape) != 3:
        raise InvalidInputError(f"{name} takes inputs of {len(shape)} dimensions after the batch; images are "
                                "(C, H, W)")
    names = list(class_names) if class_names is not None else _metadata_class_names(name, meta)
    clf = ExternalClassifier(model, name, shape, names or ("?", "?"), output="probabilities",
                             differentiable=differentiable, resize=resize, fixed_batch=_fixed_batch(dims),
                             device=device)
    with torch.no_grad():
        out = clf.raw(_probe(shape))
    if out.ndim != 2 or out.shape[0] != PROBE_SIZE:
        raise ModelOutputError(f"classifier {name} returned shape {tuple(out.shape)} for {PROBE_SIZE} images; "
                               "expected (N, K) scores")
    width = out.shape[1]
    if names is None:
        names = [str(k) for k in range(width)]
    if len(names) != width:
        raise InvalidInputError(f"{len(names)} class names given but classifier {name} returns {width} scores")
    if width < 2:
        raise ModelOutputError(f"classifier {name} returns {width} score; a classifier needs at least 2 classes")
    clf.class_names = tuple(str(s) for s in names)
    clf.output = _resolve_output(name, output, out)
    with torch.no_grad():
        clf.probs(_probe(shape))  # the declared output checked once, so a logits model called "probabilities" fails now
    return clf


def check_input_compatible(image_shape: Sequence[int], classifier: Classifier,
                           what: str = "the prior's images") -> None:
    """Raise a one-line :class:`InvalidInputError` if ``classifier`` cannot take images of ``image_shape``.

    Classifiers that declare no input shape (the built-in ones) accept any; they check at call time.

    Examples
    --------
    >>> from torch import nn
    >>> clf = ExternalClassifier(nn.Flatten(), "model.onnx", (1, 28, 28), ("a", "b"), output="logits",
    ...                          differentiable=False)
    >>> try:
    ...     check_input_compatible((1, 64, 64), clf)
    ... except InvalidInputError as exc:
    ...     print(exc)
    the prior's images are (1, 64, 64) but classifier model.onnx takes (1, 28, 28); declare resize to adapt them
    """
    check = getattr(classifier, "check_input", None)
    if check is not None:
        check(image_shape, what=what)


# -------------------------------------------------------------------------------------------- the prior


class ExternalDecoderPrior(DecoderPrior):
    """A user's decoder ``z -> x`` as a :class:`~ppl_audit.priors.base.Prior`; made by :func:`load_prior_file`.

    The latent is ``N(0, I_D)`` (as :class:`~ppl_audit.priors.decoder.DecoderPrior`) or a uniform box
    ``[low, high]^D``, written as a transform of the standard normal (``z = low + (high - low) Phi(u)``),
    so the samplers that move in whitened space run on it unchanged. The first decoded batch is checked:
    images ``(N, C, H, W)`` in ``[0, 1]``.

    Attributes
    ----------
    differentiable : bool
        Whether ``decode`` carries gradients (False for ONNX decoders: gradient samplers cannot use them).

    Examples
    --------
    >>> from torch import nn
    >>> prior = ExternalDecoderPrior(nn.Sequential(nn.Linear(2, 4), nn.Sigmoid()), 2, image_shape=(1, 2, 2),
    ...                              latent=("uniform", -1.0, 1.0))
    >>> z = prior.sample(5, generator=torch.Generator().manual_seed(0))
    >>> bool(((z >= -1) & (z <= 1)).all()), round(prior.log_prob(z)[0].item(), 4)  # -2 log 2
    (True, -1.3863)
    """

    def __init__(self, decoder: nn.Module, latent_dim: int, *, image_shape: Sequence[int], latent="normal",
                 device="cpu", name: str | None = None, differentiable: bool = True,
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__(decoder, latent_dim, image_shape=image_shape, device=device, chunk_size=chunk_size)
        self.box = _latent_box(latent)
        self.name = name
        self.differentiable = bool(differentiable)
        self._checked = False

    def distribution(self) -> dist.TorchDistribution:
        if self.box is None:
            return super().distribution()
        low, high = (torch.full((self.latent_dim,), v, device=self.device) for v in self.box)
        return dist.Uniform(low, high).to_event(1)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        u = super().sample(n, generator=generator)
        return u if self.box is None else self.from_normal(u)

    def from_normal(self, u: torch.Tensor) -> torch.Tensor:
        """The identity for a normal latent; ``low + (high - low) * Phi(u)`` for a box."""
        self._check_latents(u, batched=True)
        if self.box is None:
            return u
        low, high = self.box
        return low + (high - low) * torch.special.ndtr(u)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Exact log density: standard normal, or ``-D log(high - low)`` inside the box and ``-inf`` outside."""
        if self.box is None:
            return super().log_prob(z)
        self._check_latents(z, batched=False)
        low, high = self.box
        inside = ((z >= low) & (z <= high)).all(-1)
        value = torch.full(inside.shape, -self.latent_dim * math.log(high - low), dtype=z.dtype, device=z.device)
        return value.masked_fill(~inside, -math.inf)

    def _decode_chunk(self, z: torch.Tensor) -> torch.Tensor:
        try:
            x = super()._decode_chunk(z)
        except ModelOutputError as exc:
            raise ModelOutputError(f"{exc} (decoder {self.name})") from None
        if not self._checked:  # checked once: a decoder's output range is a property of the model, not the batch
            bad = ~((x >= 0) & (x <= 1))
            if bad.any():
                raise ModelOutputError(f"decoder {self.name} returned values outside [0, 1] (e.g. "
                                       f"{float(x[bad][0]):g}); images must be in [0, 1] (end with a sigmoid)")
            self._checked = True
        return x

    def __repr__(self) -> str:
        latent = "normal" if self.box is None else f"uniform{self.box}"
        return (f"ExternalDecoderPrior({self.name}, latent_dim={self.latent_dim}, latent={latent}, "
                f"image_shape={self.image_shape})")


def _latent_box(latent) -> tuple[float, float] | None:
    if latent == "normal":
        return None
    if isinstance(latent, (tuple, list)) and len(latent) == 3 and latent[0] == "uniform":
        low, high = latent[1:]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)) \
                and low < high:
            return float(low), float(high)
    raise InvalidInputError(f"latent must be 'normal' or ('uniform', low, high) with low < high, got {latent!r}")


def _metadata_latent(name: str, meta: dict):
    """The latent a decoder file names in its metadata key ``latent`` (``normal`` or ``uniform,LOW,HIGH``), or None."""
    text = meta.get("latent")
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        latent = "normal" if parts == ["normal"] else ("uniform", float(parts[1]), float(parts[2]))
        if latent != "normal" and (parts[0] != "uniform" or len(parts) != 3):
            raise ValueError(text)
        _latent_box(latent)
    except (ValueError, IndexError, InvalidInputError):
        raise AuditFileError(f"{name}: metadata latent {text[:80]!r} is not 'normal' or 'uniform,LOW,HIGH' with "
                             "LOW < HIGH") from None
    return latent


class _CallableModule(nn.Module):
    """A plain callable decoder as a parameterless module (a black box for gradients)."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.fn(z)
        return out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out, dtype=np.float32))


def load_prior_file(source, *, latent_dim: int | None = None, latent="normal",
                    image_shape: Sequence[int] | None = None, device="cpu") -> ExternalDecoderPrior:
    """Load a user's decoder ``z -> image`` from ``.onnx``/``.pt2`` or an entry point, as a prior.

    Parameters
    ----------
    source : str or path-like
        As for :func:`load_classifier_file`; the model maps latents ``(N, D)`` to images in ``[0, 1]``,
        ``(N, C, H, W)`` or flat ``(N, C*H*W)`` with ``image_shape`` declared.
    latent_dim : int, optional
        ``D``; read from the model's input where static (or an entry point's ``latent_dim`` attribute).
    latent : "normal" or ("uniform", low, high)
        The latent prior: ``N(0, I_D)`` (default) or the uniform box ``[low, high]^D``. An ONNX
        file may name its own in the metadata key ``latent`` (``normal`` or ``uniform,LOW,HIGH``),
        which applies unless ``latent`` is given otherwise.
    image_shape : (int, int, int), optional
        ``(C, H, W)``; default the decoded probe batch's shape.
    device : str or torch.device

    Returns
    -------
    ExternalDecoderPrior

    Raises
    ------
    AuditFileError, InvalidInputError
        As for :func:`load_classifier_file`.
    ModelOutputError
        The decoded probe batch is not images in ``[0, 1]`` of the expected shape.

    Examples
    --------
    >>> prior = load_prior_file("decoder.onnx", latent=("uniform", -3, 3))  # doctest: +SKIP
    >>> prior.decode(prior.sample(4)).shape  # doctest: +SKIP
    torch.Size([4, 1, 28, 28])
    """
    _latent_box(latent)  # a bad argument fails before the file is read
    device = resolve_device(device)
    model, name, dims, differentiable, meta = _open(source, None, device)
    if latent == "normal":
        latent = _metadata_latent(name, meta) or latent
    box = _latent_box(latent)
    if dims is None and isinstance(getattr(model, "latent_dim", None), int):
        dims = [None, model.latent_dim]
    if dims is not None and len(dims) != 2:
        shown = tuple("?" if s is None else s for s in dims)
        raise InvalidInputError(f"decoder {name} takes inputs of shape {shown}; a decoder takes latents (N, D)")
    (d,) = _input_shape(name, dims, None if latent_dim is None else (latent_dim,), "latent_dim")
    fixed = _fixed_batch(dims)
    module = model if isinstance(model, nn.Module) else _CallableModule(model)
    if fixed is not None:  # a decoder exported for a fixed batch: feed it that many latents at a time
        module = _FixedBatchModule(module, fixed)
    probe = torch.randn(PROBE_SIZE, d, generator=torch.Generator().manual_seed(PROBE_SEED)).to(device)
    if box is not None:
        probe = box[0] + (box[1] - box[0]) * torch.special.ndtr(probe)
    try:
        with torch.no_grad():
            out = module(probe)
    except Exception as exc:
        raise ModelOutputError(f"decoder {name} raised {type(exc).__name__}: {_one_line(exc)}") from None
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != PROBE_SIZE:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelOutputError(f"decoder {name} returned {got} for {PROBE_SIZE} latents; expected images (N, C, H, W)")
    if image_shape is None:
        if out.ndim != 4:
            raise ModelOutputError(f"decoder {name} returned shape {tuple(out.shape)}, not images (N, C, H, W); "
                                   "declare image_shape to reshape flat outputs")
        image_shape = tuple(out.shape[1:])
    prior = ExternalDecoderPrior(module, d, image_shape=image_shape, latent=latent, device=device, name=name,
                                 differentiable=differentiable)
    with torch.no_grad():
        prior.decode(probe)  # the first call: shape and [0, 1] checked now, not mid-sampling
    return prior


class _FixedBatchModule(nn.Module):
    """A module exported for a fixed batch size, fed in chunks of that size (the last one padded)."""

    def __init__(self, module: nn.Module, batch: int):
        super().__init__()
        self.inner = module
        self.batch = batch

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat(_run_chunked(self.inner, z, self.batch, self.batch))


__all__ = [
    "AUTO_ROW_TOLERANCE",
    "MODEL_FILE_SUFFIXES",
    "OUTPUT_MODES",
    "ExternalClassifier",
    "ExternalDecoderPrior",
    "check_input_compatible",
    "is_model_source",
    "load_classifier_file",
    "load_prior_file",
]
