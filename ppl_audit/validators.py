"""Shared checks of user-supplied values, and the names every layer shares (the base of the layering).

One rule per kind of value, for the CLI, audit files and the API.

Every check returns the value it accepted (so a caller writes ``seed = check_seed(seed)``) and raises
the error class it is given, an :class:`~ppl_audit.errors.InvalidInputError` by default, with a message
that names the value, what was given and what would be accepted. ``bool`` is never a number here:
``True`` as a seed or a count is a mistake, not 1.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Sequence

import torch

from ppl_audit.errors import InvalidInputError

LATENT_SITE = "z"  # name of the latent sample site in every prior's Pyro model
PARTICLE_PLATE = "particles"  # name of the plate over independent particles / chains

# torch.Generator.manual_seed takes any 64-bit pattern; the signed half keeps a seed meaning one thing everywhere.
MAX_API_SEED = 2**63 - 1


def is_int(value) -> bool:
    """True for an ``int`` that is not a ``bool``.

    Examples
    --------
    >>> is_int(3), is_int(True), is_int(3.0)
    (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value) -> bool:
    """True for a finite real number (``int``, ``float``, a numpy scalar) that is not a ``bool``.

    Examples
    --------
    >>> is_real(0.5), is_real("0.5"), is_real(float("inf")), is_real(False)
    (True, False, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_positive_int(value) -> bool:
    """True for a positive ``int`` that is not a ``bool``.

    Examples
    --------
    >>> is_positive_int(3), is_positive_int(True), is_positive_int(0)
    (True, False, False)
    """
    return is_int(value) and value > 0


def is_non_negative_int(value) -> bool:
    """True for an integer >= 0 that is not a ``bool`` (step counts, seeds, restarts).

    Examples
    --------
    >>> is_non_negative_int(0), is_non_negative_int(-1), is_non_negative_int(True)
    (True, False, False)
    """
    return is_int(value) and value >= 0


def is_fraction(value) -> bool:
    """True for a number in ``[0, 1)`` that is not a ``bool`` (decay rates, fractions).

    Examples
    --------
    >>> is_fraction(0.999), is_fraction(1.0), is_fraction(False)
    (True, False, False)
    """
    return is_real(value) and 0 <= value < 1


def is_positive_float(value) -> bool:
    """True for a finite number > 0.

    Examples
    --------
    >>> is_positive_float(1e-3), is_positive_float(float("nan"))
    (True, False)
    """
    return is_real(value) and value > 0


def check_seed(value, what: str = "seed", *, maximum: int = MAX_API_SEED,
               error: type[Exception] = InvalidInputError) -> int:
    """Return ``value`` if it is an ``int`` in ``[0, maximum]`` (not a bool, not a float), else raise ``error``.

    The command line, audit files and the Python API all check seeds here; audits pass a smaller
    ``maximum`` because they derive per-run seeds from theirs.

    Examples
    --------
    >>> check_seed(7)
    7
    >>> check_seed(1.5)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: seed must be an integer in 0..9223372036854775807, got 1.5
    """
    if not is_int(value) or not 0 <= value <= maximum:
        raise error(f"{what} must be an integer in 0..{maximum}, got {_shown(value)}")
    return value


def check_count(value, what: str, maximum: int, *, minimum: int = 1, why: str = "",
                error: type[Exception] = InvalidInputError) -> int:
    """Return ``value`` if it is an ``int`` in ``[minimum, maximum]``, else raise ``error`` naming the range.

    Examples
    --------
    >>> check_count(1000, "num_particles", 10**6)
    1000
    >>> check_count(10**12, "num_particles", 10**6, why="the documented bound")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: num_particles must be an integer in 1..1000000 (the documented bound), got 1000000000000
    """
    if not is_int(value) or not minimum <= value <= maximum:
        raise error(f"{what} must be an integer in {minimum}..{maximum}{f' ({why})' if why else ''}, "
                    f"got {_shown(value)}")
    return value


def check_real(value, what: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False,
               why: str = "", error: type[Exception] = InvalidInputError) -> float:
    """Return ``float(value)`` if it is a finite number in the interval, else raise ``error`` naming it.

    Examples
    --------
    >>> check_real(0.5, "warmup_fraction", 0, 1, high_open=True)
    0.5
    >>> check_real("0.5", "warmup_fraction", 0, 1, high_open=True)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: warmup_fraction must be a number in [0, 1), got '0.5'
    """
    inside = is_real(value) and (low < value if low_open else low <= value) and (
        value < high if high_open else value <= high)
    if not inside:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise error(f"{what} must be a number in {interval}{f' ({why})' if why else ''}, got {_shown(value)}")
    return float(value)


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux ``MemAvailable``), or ``None`` where unknown.

    Examples
    --------
    >>> available_memory_bytes() is None or available_memory_bytes() > 0
    True
    """
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_fits_in_memory(needed_bytes: int, what: str, *, error: type[Exception] = InvalidInputError,
                         advice: str = "use fewer particles, steps or samples") -> int:
    """Return ``needed_bytes`` if the estimate fits in the memory available now, else raise ``error`` with it.

    Examples
    --------
    >>> check_fits_in_memory(1024, "a run")
    1024
    """
    available = available_memory_bytes()
    if available is not None and needed_bytes > available:
        raise error(f"{what} would need about {format_bytes(needed_bytes)} of memory, but {format_bytes(available)} "
                    f"is available; {advice}")
    return needed_bytes


def format_bytes(count: float) -> str:
    """``"1.5 GiB"``: a byte count for a message.

    Examples
    --------
    >>> format_bytes(1536 * 2**20)
    '1.5 GiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.3g} PiB"  # pragma: no cover - the loop returns


def check_images(x: torch.Tensor, image_shape: Sequence[int] | None = None) -> None:
    """Raise :class:`InvalidInputError` unless ``x`` is a float batch ``(N, C, H, W)`` in ``[0, 1]``.

    Examples
    --------
    >>> check_images(torch.zeros(2, 1, 64, 64), (1, 64, 64))
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise InvalidInputError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        raise InvalidInputError(
            f"images must have shape (N, {', '.join(map(str, image_shape))}), got {tuple(x.shape)}"
        )
    if not torch.is_floating_point(x):
        raise InvalidInputError(f"images must be floating point in [0, 1], got dtype {x.dtype}")
    if x.numel() and (torch.isnan(x).any() or x.min() < 0 or x.max() > 1):
        raise InvalidInputError("images must lie in [0, 1] with no NaN")


def _shown(value) -> str:
    """``repr(value)``, shortened so that a hostile value cannot flood the one-line error."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4,300-digit str limit
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    return text if len(text) <= 80 else text[:60] + "..."


__all__ = ["LATENT_SITE", "MAX_API_SEED", "PARTICLE_PLATE", "available_memory_bytes", "check_count",
           "check_fits_in_memory", "check_images", "check_real", "check_seed", "format_bytes", "is_fraction", "is_int",
           "is_non_negative_int", "is_positive_float", "is_positive_int", "is_real"]
