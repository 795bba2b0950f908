"""Card tables -> a kind's frozen config: the shared field checks every trainer uses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from ppl_audit.cards import ModelCard
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.validators import is_fraction, is_non_negative_int, is_positive_float, is_positive_int


def card_config(cls, card: ModelCard, tables: Sequence[str]):
    """Build the frozen config dataclass ``cls`` from the card's tables.

    Every key of the named tables must be a field of ``cls`` (a typo is an
    error, never a silent default); fields the card leaves out keep their
    defaults, and a field without a default is a required key; lists become
    tuples. ``cls.__post_init__`` validates and raises ``ValueError`` naming
    the field; that becomes an
    :class:`~ppl_audit.errors.AuditFileError` naming the card.

    Examples
    --------
    >>> from ppl_audit.classifiers.lenet import LeNetConfig
    >>> from ppl_audit.training import as_card
    >>> card_config(LeNetConfig, as_card("mnist-lenet5"), ("architecture", "training")).conv_channels
    (6, 16)
    """
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    where = card.source or card.name
    for table in tables:
        values = getattr(card, table)
        unknown = sorted(set(values) - names)
        if unknown:
            raise AuditFileError(f"{where}: unknown key(s) {unknown} in [{table}]; allowed: {sorted(names)}")
        kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise AuditFileError(f"{where}: missing key {missing[0]!r} (in [{'] or ['.join(tables)}])")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise AuditFileError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class CardConfig:
    """Base of every kind's frozen config: read from a card's tables, validated when built.

    A subclass declares its fields (with defaults) and, as class attributes,
    ``TABLES`` (the card tables it reads), ``TYPE`` (what ``type`` must say;
    ``None``: the class has no ``type`` field) and ``POSITIVE_INTEGERS``. This
    ``__post_init__`` checks ``type``, those integers, ``learning_rate`` and
    ``seed`` (when the class has them); a subclass's own ``__post_init__`` calls
    it first, then checks what only that kind has.

    Examples
    --------
    >>> @dataclass(frozen=True)
    ... class ToyConfig(CardConfig):
    ...     TYPE = "toy"
    ...     type: str = "toy"
    ...     epochs: int = 1
    ...     batch_size: int = 8
    >>> ToyConfig(epochs=0)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: epochs must be a positive integer, got 0
    >>> ToyConfig(type="other")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: type must be 'toy', got 'other'
    """

    TABLES: ClassVar[tuple[str, ...]] = ("architecture", "training")
    TYPE: ClassVar[str | None] = None
    POSITIVE_INTEGERS: ClassVar[tuple[str, ...]] = ("epochs", "batch_size")

    def __post_init__(self):
        if self.TYPE is not None:
            check_field(getattr(self, "type", None) == self.TYPE, "type", getattr(self, "type", None),
                        repr(self.TYPE))
        check_training_fields(self, self.POSITIVE_INTEGERS)

    @classmethod
    def from_card(cls, card: ModelCard):
        """This config from the card's ``TABLES`` (see :func:`card_config`)."""
        return card_config(cls, card, cls.TABLES)


def check_field(ok: bool, name: str, value: Any, accepted: str) -> None:
    """Raise ``InvalidInputError`` (a ``ValueError``) naming a config field unless ``ok``.

    Examples
    --------
    >>> check_field(True, "epochs", 3, "a positive integer")
    """
    if not ok:
        raise InvalidInputError(f"{name} must be {accepted}, got {value!r}")


def check_training_fields(config, names: Sequence[str] = ("epochs", "batch_size")) -> None:
    """Validate the training fields every trainer config shares.

    ``names`` must be positive integers; ``learning_rate`` (when the config has
    one) a number > 0; ``seed`` an integer >= 0.

    Raises
    ------
    InvalidInputError
        Naming the first bad field, its value and what is accepted.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> check_training_fields(SimpleNamespace(epochs=0, batch_size=8, learning_rate=1e-3, seed=0))
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: epochs must be a positive integer, got 0
    """
    for name in names:
        check_field(is_positive_int(getattr(config, name)), name, getattr(config, name), "a positive integer")
    if hasattr(config, "learning_rate"):
        check_field(is_positive_float(config.learning_rate), "learning_rate", config.learning_rate, "a number > 0")
    seed = getattr(config, "seed", 0)
    check_field(is_non_negative_int(seed), "seed", seed, "an integer >= 0")


def check_adversarial_fields(config) -> None:
    """Check the Adam and WGAN-GP fields shared by the adversarial trainers' configs.

    ``beta1`` and ``beta2`` (Adam's decay rates) must lie in ``[0, 1)`` and
    ``gradient_penalty`` (the WGAN-GP lambda) must be ``>= 0``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> check_adversarial_fields(SimpleNamespace(beta1=0.5, beta2=1.0, gradient_penalty=10.0))
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: beta2 must be a number in [0, 1), got 1.0
    """
    for name in ("beta1", "beta2"):
        value = getattr(config, name)
        check_field(is_fraction(value), name, value,
                    "a number in [0, 1)")
    value = config.gradient_penalty
    check_field(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, "gradient_penalty",
                value, "a number >= 0")


__all__ = [
    "CardConfig",
    "card_config",
    "check_adversarial_fields",
    "check_field",
    "check_training_fields",
]
