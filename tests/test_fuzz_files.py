"""Property-based: audit files, model cards and ``ood`` folders either load or raise one PplAuditError line.

Files are written from generated TOML values (numbers at their extremes, wrong types, deep nesting,
binary bytes) and generated arrays and pictures (truncated, lying headers, odd names).
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ppl_audit.audits import load_audit_file
from ppl_audit.cards import _shipped_card, load_card
from ppl_audit.classifiers.house_rocket import HouseRocketConfig
from ppl_audit.data.folder import load_image_folder
from ppl_audit.errors import PplAuditError
from tests.fuzz_support import fuzz_settings

TOML_SCALAR = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
                        st.booleans(), st.text(max_size=8), st.sampled_from([1e300, 1e-300, 0, -1, 10**6, "abc"]))
TOML_VALUE = st.recursive(TOML_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), inner, max_size=3)),
                          max_leaves=6)


def toml_value(value) -> str:
    """``value`` as TOML text (inline tables and arrays; special floats spelled as TOML spells them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value == float("inf") else "-inf" if value == -float("inf") else repr(value))
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


def one_line(exc: PplAuditError) -> None:
    assert "\n" not in str(exc) and str(exc)


AUDIT_KEYS = ["seed", "title", "worlds", "num_particles", "num_steps", "num_samples", "num_prior_samples",
              "classifier", "method", "device", "data_dir", "sampler_options", "num_in", "num_out", "rows", "taus",
              "runs", "figure_tau", "draws", "steps", "learning_rate", "prior_mass", "vae_ensemble", "unknown_key"]


@fuzz_settings(max_examples=350)
@given(kind=st.sampled_from(["levelset", "ood", "gwin", "selective", "nope"]),
       entries=st.dictionaries(st.sampled_from(AUDIT_KEYS), TOML_VALUE, max_size=4),
       targets=st.lists(st.dictionaries(st.sampled_from(["name", "probabilities", "concentration", "relaxation",
                                                         "sigma", "x"]), TOML_VALUE, max_size=4), max_size=2),
       depth=st.sampled_from([0, 0, 0, 50, 1000]))
def test_audit_files(kind, entries, targets, depth):
    lines = ["[audit]", f'kind = "{kind}"'] + [f"{k} = {toml_value(v)}" for k, v in entries.items()]
    for target in targets:
        lines += ["[[targets]]"] + [f"{k} = {toml_value(v)}" for k, v in target.items()]
    if depth:
        lines.append("deep = " + "[" * depth + "]" * depth)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.toml"
        path.write_text("\n".join(lines) + "\n")
        try:
            load_audit_file(path)
        except PplAuditError as exc:
            one_line(exc)


SHIPPED = _shipped_card("house-rocket-cnn")
CARD_KEYS = {"architecture": ["channels", "hidden", "type"], "data": ["num_train", "num_test", "world"],
             "training": ["epochs", "batch_size", "learning_rate", "seed"],
             "expected": ["min_test_accuracy", "max_loss", "expected", "training_seconds_2_cpu_cores"],
             "model": ["name"]}


@fuzz_settings(max_examples=350)
@given(edits=st.lists(st.tuples(st.sampled_from(sorted(CARD_KEYS)), st.data()), max_size=3),
       binary=st.one_of(st.none(), st.binary(min_size=1, max_size=64)))
def test_model_cards(edits, binary):
    text = SHIPPED
    for table, data in edits:
        key = data.draw(st.sampled_from(CARD_KEYS[table]))
        value = toml_value(data.draw(TOML_VALUE))
        text = text.replace(f"[{table}]\n", f"[{table}]\n{key} = {value}\n", 1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "card.toml"
        path.write_bytes(binary + text.encode() if binary else text.encode())
        try:
            HouseRocketConfig.from_card(load_card(path))
        except PplAuditError as exc:
            one_line(exc)


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


ARRAYS = st.sampled_from([np.zeros((2, 28, 28), np.uint8), np.ones((1, 1, 28, 28), np.float32),
                          np.full((28, 28), 300.0), np.zeros((3, 27, 28)), np.array([b"x" * 28] * 28),
                          np.zeros((0, 28, 28)), np.full((1, 28, 28), np.nan), np.zeros((1, 28, 28), bool),
                          np.zeros((1, 28, 28), np.complex64)])


@st.composite
def folder_file(draw):
    kind = draw(st.sampled_from(["npy", "npz", "png", "junk"]))
    name = draw(st.sampled_from(["a", "B", "image", "x.y"])) + draw(st.sampled_from(
        {"npy": [".npy", ".NPY", ".Npy"], "npz": [".npz", ".NPZ"], "png": [".png", ".PNG", ".jpg"],
         "junk": [".npy", ".png", ".npz", ".txt"]}[kind]))
    if kind == "junk":
        return name, draw(st.binary(max_size=200))
    if kind == "png":
        from PIL import Image

        side = draw(st.sampled_from([28, 27, 1]))
        buffer = io.BytesIO()
        Image.new("L", (side, side), color=draw(st.integers(0, 255))).save(buffer, format="PNG")
        data = buffer.getvalue()
    elif kind == "npy":
        data = npy_bytes(draw(ARRAYS))
    else:
        buffer = io.BytesIO()
        np.savez(buffer, **{f"k{i}": a for i, a in enumerate(draw(st.lists(ARRAYS, max_size=2)))})
        data = buffer.getvalue()
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if draw(st.booleans()) and kind == "npy":  # a header that lies about the shape
        data = data.replace(b"(2, 28, 28)", b"(200000000, 28, 28)").replace(b"(1, 1, 28, 28)", b"(1, 1, 28, 99999)")
    return name, data if cut is None else data[:cut]


@fuzz_settings(max_examples=350)
@given(files=st.lists(folder_file(), max_size=3, unique_by=lambda f: f[0].lower()))
def test_ood_folders(files):
    with tempfile.TemporaryDirectory() as folder:
        for name, data in files:
            (Path(folder) / name).write_bytes(data)
        try:
            images, names = load_image_folder(folder)
        except PplAuditError as exc:
            one_line(exc)
        else:
            assert images.shape[1:] == (1, 28, 28) and len(names) == len(images)
            assert float(images.min()) >= 0 and float(images.max()) <= 1
