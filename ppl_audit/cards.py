"""Model cards: declarative TOML recipes for the models this toolkit trains.

A card has the tables ``[model]`` (``name``, ``kind``, ``description``),
``[architecture]``, ``[data]``, ``[training]`` and ``[expected]``. The
recipe hash covers ``kind`` and the architecture, data and training tables
(plus the trainer's version), so editing any of them builds a new cache entry
while editing a comment or the description does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ppl_audit.errors import AuditFileError
from ppl_audit.paths import SAFE_NAME_RULE, check_safe_name, is_safe_name
from ppl_audit.validators import is_real

CARD_TABLES = ("model", "architecture", "data", "training", "expected")
REQUIRED_TABLES = ("model", "architecture", "data", "training")
#: The one list of built-in card kinds: ``kind -> (trainer version, where its Trainer lives)``. The
#: version enters the recipe hash (bump it when the training code changes what it builds); the
#: Trainer is imported on first use. ``ppl_audit.training.register_trainer`` adds a kind at run time.
BUILTIN_KINDS = {
    "house-rocket-classifier": (3, "ppl_audit.classifiers.house_rocket:TRAINER"),  # 2: roof N+(12, 4^2); 3: seamless
    "lenet-classifier": (1, "ppl_audit.classifiers.lenet:TRAINER"),
    "vae": (1, "ppl_audit.generative.vae:TRAINER"),
    "gan": (1, "ppl_audit.generative.gan:TRAINER"),
    "bayesian-lenet-classifier": (1, "ppl_audit.classifiers.bayesian_lenet:TRAINER"),
    "gwin": (1, "ppl_audit.generative.gwin:TRAINER"),
    "vae-ensemble": (1, "ppl_audit.generative.vae_ensemble:TRAINER"),
    "gan-ensemble": (1, "ppl_audit.generative.gan_ensemble:TRAINER"),
    "class-vae": (1, "ppl_audit.generative.class_members:VAE_TRAINER"),
    "class-gan": (1, "ppl_audit.generative.class_members:GAN_TRAINER"),
    "sdim-classifier": (1, "ppl_audit.classifiers.sdim:TRAINER"),
}
#: every kind a card may name -> its trainer version: the built-in kinds and those registered since
TRAINER_VERSIONS = {kind: version for kind, (version, _) in BUILTIN_KINDS.items()}
CARD_PACKAGE = "ppl_audit.model_cards"  # models/ is shipped under this name


@dataclass(frozen=True)
class ModelCard:
    """A parsed model card.

    Examples
    --------
    >>> card = load_card("house-rocket-cnn")
    >>> card.kind, len(card.recipe_hash)
    ('house-rocket-classifier', 16)
    """

    name: str
    kind: str
    description: str
    architecture: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]
    expected: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        # The name becomes a file name in the weights cache and the training report's folder.
        check_safe_name(self.name, f"{self.source or 'model card'}: [model] name", AuditFileError)
        if self.kind not in TRAINER_VERSIONS:
            raise AuditFileError(
                f"{self.source or 'model card'}: [model] kind = {self.kind!r} is unknown; "
                f"known kinds: {', '.join(sorted(TRAINER_VERSIONS))} (ppl_audit.training.register_trainer adds one)"
            )

    @property
    def recipe(self) -> dict[str, Any]:
        """What the weights depend on: kind, trainer version, architecture, data, training."""
        return {
            "kind": self.kind,
            "trainer_version": TRAINER_VERSIONS[self.kind],
            "architecture": self.architecture,
            "data": self.data,
            "training": self.training,
        }

    @property
    def recipe_hash(self) -> str:
        """First 16 hex digits of the sha256 of the canonical JSON of :attr:`recipe`."""
        canonical = json.dumps(self.recipe, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def cache_path(self, root: Path) -> Path:
        """``root / NAME-HASH.safetensors`` (``__post_init__`` made sure the name is one path component)."""
        return root / f"{self.name}-{self.recipe_hash}.safetensors"

    def with_overrides(self, **tables: dict[str, Any]) -> "ModelCard":
        """A copy whose tables are updated key by key (tests use tiny training sizes).

        Examples
        --------
        >>> small = load_card("house-rocket-cnn").with_overrides(training={"epochs": 1})
        >>> small.training["epochs"]
        1
        """
        fields = {name: dict(getattr(self, name)) for name in ("architecture", "data", "training", "expected")}
        for name, updates in tables.items():
            if name not in fields:
                raise AuditFileError(f"cannot override table [{name}]; tables: {', '.join(fields)}")
            fields[name].update(updates)
        return ModelCard(self.name, self.kind, self.description, source=self.source, **fields)

    def to_toml(self) -> str:
        """The card as TOML text that parses back to the same recipe (comments are not kept).

        Values are written as JSON, which is valid TOML for the strings,
        numbers, booleans and lists that cards hold.

        Examples
        --------
        >>> card = load_card("mnist-lenet5").with_overrides(training={"epochs": 1})
        >>> parse_card(card.to_toml()).recipe_hash == card.recipe_hash
        True
        """
        lines = ["[model]", f"name = {json.dumps(self.name)}", f"kind = {json.dumps(self.kind)}",
                 f"description = {json.dumps(self.description)}"]
        for table in ("architecture", "data", "training", "expected"):
            lines.append(f"\n[{table}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in getattr(self, table).items()]
        return "\n".join(lines) + "\n"


def parse_card(text: str, source: str = "<string>") -> ModelCard:
    """Parse the TOML text of a model card.

    Raises
    ------
    AuditFileError
        Naming the file and the missing or malformed table or key.
    """
    doc = loads_toml(text, source)
    unknown = set(doc) - set(CARD_TABLES)
    if unknown:
        raise AuditFileError(f"{source}: unknown table(s) {sorted(unknown)}; expected {list(CARD_TABLES)}")
    for table in REQUIRED_TABLES:
        if not isinstance(doc.get(table), dict):
            raise AuditFileError(f"{source}: missing table [{table}]")
    model = doc["model"]
    for key in ("name", "kind"):
        if not isinstance(model.get(key), str) or not model[key]:
            raise AuditFileError(f"{source}: [model] needs a non-empty string {key!r}")
    expected = doc.get("expected", {})
    check_expected_table(expected, source)
    return ModelCard(
        name=model["name"],
        kind=model["kind"],
        description=str(model.get("description", "")),
        architecture=doc["architecture"],
        data=doc["data"],
        training=doc["training"],
        expected=expected,
        source=source,
    )


def loads_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error or nesting too deep for the parser is an :class:`AuditFileError`.

    Examples
    --------
    >>> loads_toml("a = " + "[" * 1000 + "]" * 1000, "deep.toml")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.AuditFileError: deep.toml: not valid TOML: nested too deeply
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AuditFileError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise AuditFileError(f"{source}: not valid TOML: nested too deeply") from None


def read_toml_text(path: Path) -> str:
    """A TOML file's text; a file that is not UTF-8 text (a binary card) is an :class:`AuditFileError`."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuditFileError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise AuditFileError(f"{path}: cannot be read ({exc.strerror})") from None


def check_expected_table(expected: Any, source: str) -> None:
    """Refuse an ``[expected]`` table whose ``min_KEY`` / ``max_KEY`` bounds are not finite numbers.

    Other keys (notes such as ``training_seconds_2_cpu_cores``) must be numbers or strings.

    Examples
    --------
    >>> check_expected_table({"min_test_accuracy": "high"}, "c.toml")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.AuditFileError: c.toml: [expected] min_test_accuracy must be a finite number, got 'high'
    """
    if not isinstance(expected, dict):
        raise AuditFileError(f"{source}: [expected] must be a table of bounds, got {expected!r}"[:200])
    for key, value in expected.items():
        if key.startswith(("min_", "max_")) and not is_real(value):
            raise AuditFileError(f"{source}: [expected] {key} must be a finite number, got {value!r}"[:200])
        if not is_real(value) and not isinstance(value, str):
            raise AuditFileError(f"{source}: [expected] {key} must be a number or a string, got {value!r}"[:200])


def _shipped_card(name: str) -> str | None:
    try:
        entry = resources.files(CARD_PACKAGE).joinpath(f"{name}.toml")
        if entry.is_file():
            return entry.read_text()
    except ModuleNotFoundError:
        pass
    # A source checkout that is on sys.path but not installed.
    local = Path(__file__).resolve().parent.parent / "models" / f"{name}.toml"
    return local.read_text() if local.is_file() else None


def register_kind(kind: str, version: int) -> None:
    """Let cards name ``kind``, whose trainer is at ``version`` (called by ``register_trainer``).

    Examples
    --------
    >>> register_kind("lenet-classifier", 1)
    >>> register_kind("", 1)
    Traceback (most recent call last):
    ...
    ValueError: a card kind must be a safe name (letters, digits, '-', '_' or '.', not starting with '.', at most 100 characters), got ''
    """
    if not isinstance(kind, str) or not is_safe_name(kind):
        raise ValueError(f"a card kind must be a safe name ({SAFE_NAME_RULE}), got {kind!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"a trainer version must be an integer >= 1, got {version!r}")
    TRAINER_VERSIONS[kind] = version


def load_card(name_or_path: str | os.PathLike) -> ModelCard:
    """Load a model card from a path, or a shipped one by name (``"house-rocket-cnn"``).

    Examples
    --------
    >>> load_card("house-rocket-cnn").name
    'house-rocket-cnn'
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise AuditFileError(f"model card {path} does not exist")
        return parse_card(read_toml_text(path), source=str(path))
    if not is_safe_name(str(name_or_path)):
        raise AuditFileError(f"no model card named {str(name_or_path)!r}: a card is a .toml file that exists, "
                             f"or the name of a shipped card ({SAFE_NAME_RULE})")
    text = _shipped_card(str(name_or_path))
    if text is None:
        raise AuditFileError(f"no model card named {str(name_or_path)!r} (looked in {CARD_PACKAGE} and ./models)")
    return parse_card(text, source=f"{name_or_path}.toml")


__all__ = [
    "BUILTIN_KINDS",
    "CARD_PACKAGE",
    "CARD_TABLES",
    "REQUIRED_TABLES",
    "TRAINER_VERSIONS",
    "ModelCard",
    "check_expected_table",
    "load_card",
    "loads_toml",
    "parse_card",
    "read_toml_text",
    "register_kind",
]
