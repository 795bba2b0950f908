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
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
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
