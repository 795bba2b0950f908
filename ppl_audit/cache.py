"""The weights cache: safetensors files checked against a sha256 sidecar.

Trained weights are artifacts, not source. They live under
``$PPL_AUDIT_CACHE`` (default ``~/.cache/ppl-audit``) as
``NAME-HASH.safetensors`` beside ``NAME-HASH.json`` (the file's sha256, the
recipe and the training metrics). Loading never unpickles: safetensors holds
raw tensors only, and a file whose checksum or header is wrong raises
:class:`~ppl_audit.errors.WeightsError` so that the caller can rebuild it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ppl_audit.errors import WeightsError
from ppl_audit.paths import dead_writers_leftovers, sha256_file, temporary_prefix

CACHE_ENV = "PPL_AUDIT_CACHE"
DEFAULT_CACHE = Path("~/.cache/ppl-audit")


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``path``, else ``$PPL_AUDIT_CACHE``, else ``~/.cache/ppl-audit``.

    Examples
    --------
    >>> cache_dir("/tmp/x").as_posix()
    '/tmp/x'
    """
    if path is None:
        path = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(path).expanduser()


def clean_stale_temporaries(path: Path) -> list[Path]:
    """Remove the ``.NAME.tmp-PID-*`` files beside ``path`` whose writer no longer runs; return them."""
    cleaned = [entry for entry, _ in dead_writers_leftovers(path.parent, path.name)
               if entry.is_file() and not entry.is_symlink()]
    for entry in cleaned:
        entry.unlink(missing_ok=True)
    return cleaned


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """Save a state dict as safetensors with a checksummed JSON sidecar, atomically.

    Parameters
    ----------
    path : path-like
        Target ``.safetensors`` file; the sidecar is the same path with ``.json``.
    state_dict : dict
        Tensors to save (moved to the CPU, made contiguous).
    info : dict
        JSON-safe metadata (recipe, metrics) stored in the sidecar.

    Returns
    -------
    pathlib.Path
        The weights file.
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    check_finite_weights(tensors, path.stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (path, path.with_suffix(".json")):
        clean_stale_temporaries(leftover)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name))
    os.close(fd)
    try:
        save_file(tensors, tmp)
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sidecar = {"sha256": digest, "info": info}
    _atomic_write_bytes(path.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True).encode())
    return path


def check_finite_weights(tensors: dict[str, torch.Tensor], name: str) -> None:
    """Refuse weights holding NaN or inf: a diverged training run must never be cached.

    Examples
    --------
    >>> check_finite_weights({"w": torch.tensor([1.0, float("nan")])}, "toy")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.WeightsError: training of toy ended with non-finite weights (1 of 2 values of 'w' are NaN or inf; a smaller learning_rate may help); nothing was cached
    """
    for key, tensor in tensors.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise WeightsError(f"training of {name} ended with non-finite weights ({bad} of {tensor.numel()} values "
                                   f"of {key!r} are NaN or inf; a smaller learning_rate may help); nothing was cached")


# Metrics whose names contain one of these are shares: a sidecar value outside [0, 1] was edited or corrupted.
FRACTION_METRIC_WORDS = ("accuracy", "fraction", "coverage", "auroc")


def check_sidecar_info(info: Any, recipe_hash: str, path: Path) -> dict[str, Any]:
    """``info`` if it records ``recipe_hash`` and plausible metrics, else :class:`WeightsError` (the caller rebuilds).

    Numbers in ``metrics`` must be finite; shares (names with ``accuracy``, ``fraction``...) must lie in ``[0, 1]``
    and ``*seconds`` must be >= 0, so that an edited sidecar never reaches a report.

    Examples
    --------
    >>> check_sidecar_info({"recipe_hash": "ab", "metrics": {"test_accuracy": 1.5}}, "ab", Path("x.safetensors"))
    Traceback (most recent call last):
    ...
    ppl_audit.errors.WeightsError: sidecar of x.safetensors records test_accuracy = 1.5, outside [0, 1]
    """
    if not isinstance(info, dict) or info.get("recipe_hash") != recipe_hash:
        recorded = info.get("recipe_hash") if isinstance(info, dict) else None
        raise WeightsError(f"sidecar of {path.name} records recipe {str(recorded)[:20]!r}, not {recipe_hash!r}")
    metrics = info.get("metrics", {})
    if not isinstance(metrics, dict):
        raise WeightsError(f"sidecar of {path.name}: 'metrics' must be a table")
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # curves, lists and notes are shown as they are
        if not math.isfinite(value):
            raise WeightsError(f"sidecar of {path.name} records {key} = {value}, not a finite number")
        if any(word in key for word in FRACTION_METRIC_WORDS) and not 0 <= value <= 1:
            raise WeightsError(f"sidecar of {path.name} records {key} = {value}, outside [0, 1]")
        if key.endswith("seconds") and value < 0:
            raise WeightsError(f"sidecar of {path.name} records {key} = {value}, a negative duration")
    return info


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load and verify weights saved by :func:`save_weights`.

    Returns
    -------
    (state_dict, info)

    Raises
    ------
    WeightsError
        When the file or its sidecar is missing, the checksum differs, or the
        safetensors header cannot be parsed.
    """
    path = Path(path)
    sidecar_path = path.with_suffix(".json")
    if not path.is_file() or not sidecar_path.is_file():
        raise WeightsError(f"weights file {path} or its sidecar {sidecar_path.name} is missing")
    try:
        sidecar = json.loads(sidecar_path.read_text())
        expected, info = sidecar["sha256"], sidecar.get("info", {})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OSError) as exc:
        raise WeightsError(f"sidecar {sidecar_path} is corrupt: {exc}") from exc
    if not isinstance(expected, str) or not isinstance(info, dict):
        raise WeightsError(f"sidecar {sidecar_path} is corrupt: 'sha256' must be a string and 'info' a table")
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(f"weights file {path} is corrupt: sha256 {actual[:12]}... != recorded {expected[:12]}...")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {path} cannot be read as safetensors: {exc}") from exc
    return tensors, info


__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE",
    "FRACTION_METRIC_WORDS",
    "cache_dir",
    "check_finite_weights",
    "check_sidecar_info",
    "clean_stale_temporaries",
    "load_weights",
    "save_weights",
]
