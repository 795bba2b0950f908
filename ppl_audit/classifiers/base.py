"""The Classifier contract and the black-box wrapper.

A classifier maps a batch of images ``(N, C, H, W)`` to class probabilities
``(N, K)``. Gradient-free samplers need nothing more, so any Python callable
that does this can be audited (the level-set paper's point: the classifier
may be a black box).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.validators import check_images  # noqa: F401 - part of the contract: classifiers check their input

PROBABILITY_ROW_TOLERANCE = 1e-3  # |sum_k p_k - 1| allowed per row: float32 softmax sums land within 1e-6
DEFAULT_CHUNK_SIZE = 256  # images per forward pass: ~2x faster than one 4,096 batch on a 2-core CPU


def check_probabilities(p: torch.Tensor, num_inputs: int, num_classes: int | None = None) -> torch.Tensor:
    """Check that a classifier's output is an ``(N, K)`` batch of probability rows.

    Parameters
    ----------
    p : torch.Tensor
        The classifier's output.
    num_inputs : int
        ``N``, the number of images that were passed in.
    num_classes : int, optional
        ``K`` when known.

    Returns
    -------
    torch.Tensor
        ``p`` itself.

    Raises
    ------
    ModelOutputError
        On a wrong shape, NaN/inf, negative entries or rows not summing to 1.

    Examples
    --------
    >>> check_probabilities(torch.tensor([[0.25, 0.75]]), 1).shape
    torch.Size([1, 2])
    """
    if not isinstance(p, torch.Tensor):
        raise ModelOutputError(f"classifier returned a {type(p).__name__}, expected a tensor of probabilities")
    if p.dtype == torch.bool or p.is_complex() or not (p.is_floating_point() or _is_integer_dtype(p.dtype)):
        raise ModelOutputError(f"classifier returned dtype {p.dtype}, expected real probabilities (float)")
    if p.ndim != 2 or p.shape[0] != num_inputs or (num_classes is not None and p.shape[1] != num_classes):
        expected = f"({num_inputs}, {num_classes if num_classes is not None else 'K'})"
        raise ModelOutputError(f"classifier returned shape {tuple(p.shape)}, expected {expected}")
    bad = ~torch.isfinite(p).all(dim=1)
    if bad.any():
        raise ModelOutputError(
            f"classifier returned NaN or inf for {int(bad.sum())} of {num_inputs} inputs"
        )
    if (p < 0).any():
        raise ModelOutputError("classifier returned negative probabilities")
    row_error = (p.sum(dim=1) - 1).abs()
    if (row_error > PROBABILITY_ROW_TOLERANCE).any():
        worst = float(row_error.max())
        raise ModelOutputError(
            f"classifier rows are not probabilities: a row sums to 1 {'+-'} {worst:.3g} "
            f"(tolerance {PROBABILITY_ROW_TOLERANCE}); return softmax outputs, not logits"
        )
    return p


def _is_integer_dtype(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


# numpy dtype kinds a classifier's output may have: float, signed and unsigned int (a one-hot list is ints).
REAL_KINDS = "fiu"


def as_probability_tensor(out, name: str, num_inputs: int) -> torch.Tensor:
    """A black box's output as a float tensor, or :class:`ModelOutputError` naming what it returned.

    Examples
    --------
    >>> as_probability_tensor([[0.5, 0.5]], "clf", 1)
    tensor([[0.5000, 0.5000]])
    >>> as_probability_tensor("abc", "clf", 1)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.ModelOutputError: classifier 'clf' returned a str, not an (N, K) array of probabilities for 1 inputs
    """
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (str, bytes, dict)) or not hasattr(out, "__len__") and not hasattr(out, "__array__"):
        raise ModelOutputError(f"classifier {name!r} returned a {type(out).__name__}, not an (N, K) array of "
                               f"probabilities for {num_inputs} inputs")
    try:
        array = np.asarray(out)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged nesting, objects numpy cannot hold
        raise ModelOutputError(f"classifier {name!r} returned a {type(out).__name__} that is not a rectangular "
                               f"array of numbers ({str(exc)[:120]})") from None
    if array.dtype.kind not in REAL_KINDS:
        raise ModelOutputError(f"classifier {name!r} returned an array of dtype {array.dtype}, expected real "
                               "probabilities (float)")
    return torch.from_numpy(array.astype(np.float32))


class Classifier:
    """Base of every classifier: ``probs(x) -> (N, K)``.

    Attributes
    ----------
    class_names : tuple of str
        Names of the ``K`` classes, in output order.
    differentiable : bool
        Whether ``probs`` can be differentiated with autograd.
    """

    class_names: tuple[str, ...] = ()
    differentiable: bool = False

    @property
    def num_classes(self) -> int:
        """``K``."""
        return len(self.class_names)

    def probs(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Class probabilities ``(N, K)`` for images ``(N, C, H, W)``."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.probs(x)


class CallableClassifier(Classifier):
    """Wrap any callable ``images -> probabilities`` as a :class:`Classifier`.

    The callable may return a torch tensor, a numpy array or nested lists; it
    is treated as a black box (not differentiable) and its output is checked
    on every call, so a NaN or a row of logits raises instead of sampling
    garbage.

    Parameters
    ----------
    fn : callable
        Maps a float tensor ``(N, C, H, W)`` to ``(N, K)`` probabilities.
    class_names : sequence of str
        Names of the ``K`` outputs.
    chunk_size : int
        Largest batch handed to ``fn`` at once.

    Examples
    --------
    >>> clf = CallableClassifier(lambda x: np.full((len(x), 2), 0.5), ["a", "b"])
    >>> clf.probs(torch.zeros(3, 1, 8, 8)).tolist()
    [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    """

    differentiable = False

    def __init__(self, fn: Callable, class_names: Sequence[str], *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 name: str | None = None):
        if not callable(fn):
            raise InvalidInputError(f"classifier must be callable, got {type(fn).__name__}")
        if isinstance(class_names, str) or not isinstance(class_names, Sequence) or not all(
                isinstance(c, str) for c in class_names):
            raise InvalidInputError(f"class_names must be a sequence of strings, got {class_names!r}"[:200])
        if len(class_names) < 2:
            raise InvalidInputError("a classifier needs at least 2 class names")
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
            raise InvalidInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.fn = fn
        self.class_names = tuple(class_names)
        self.chunk_size = int(chunk_size)
        #: named in every error about the callable's output
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for chunk in x.split(self.chunk_size):
            try:
                out = self.fn(chunk)
            except Exception as exc:  # a black box's own failure; KeyboardInterrupt is no Exception and passes
                raise ModelOutputError(f"classifier {self.name!r} raised {type(exc).__name__}: "
                                       f"{str(exc)[:200]}") from exc
            out = as_probability_tensor(out, self.name, chunk.shape[0])
            try:
                checked = check_probabilities(out, chunk.shape[0], self.num_classes)
            except ModelOutputError as exc:
                raise ModelOutputError(f"{exc} (classifier {self.name!r})") from None
            outs.append(checked.to(device=x.device, dtype=x.dtype))
        return torch.cat(outs) if outs else x.new_zeros((0, self.num_classes))


def as_classifier(obj, class_names: Sequence[str] | None = None) -> Classifier:
    """Return ``obj`` if it is a :class:`Classifier`, else wrap a callable.

    Examples
    --------
    >>> as_classifier(lambda x: torch.full((len(x), 2), 0.5), ["a", "b"]).num_classes
    2
    """
    if isinstance(obj, Classifier):
        return obj
    if class_names is None:
        raise InvalidInputError("class_names are needed to wrap a plain callable as a classifier")
    return CallableClassifier(obj, class_names)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "PROBABILITY_ROW_TOLERANCE",
    "REAL_KINDS",
    "CallableClassifier",
    "Classifier",
    "as_classifier",
    "as_probability_tensor",
    "check_images",
    "check_probabilities",
]
