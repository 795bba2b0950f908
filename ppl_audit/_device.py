"""Device selection shared by every module (``device="auto"|"cpu"|"cuda"``)."""

from __future__ import annotations

import torch

from ppl_audit.errors import InvalidInputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` picks CUDA when it is available and the CPU otherwise;
        any other value is passed to :class:`torch.device`.

    Returns
    -------
    torch.device

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return _check_supported(device, device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(
            f"device={device!r} is not a device; use 'auto', 'cpu' or 'cuda[:N]'"
        ) from exc
    return _check_supported(resolved, device)


SUPPORTED_TYPES = ("cpu", "cuda")  # what the toolkit's kernels and models are tested on


def _check_supported(resolved: torch.device, asked) -> torch.device:
    """``resolved`` if the toolkit can run there now, else an error naming what was asked."""
    if resolved.type not in SUPPORTED_TYPES:
        raise InvalidInputError(f"device={str(asked)!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device={str(asked)!r} was asked for but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device={str(asked)!r}: there are only {torch.cuda.device_count()} CUDA devices")
    return resolved


__all__ = [
    "SUPPORTED_TYPES",
    "resolve_device",
]
