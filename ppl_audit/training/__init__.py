"""Card -> train -> cache: one mechanism for every model the toolkit builds.

The package has six rooms: :mod:`~ppl_audit.training.registry` (kinds -> trainers),
:mod:`~ppl_audit.training.loader` (:func:`load_model` and the cache checks),
:mod:`~ppl_audit.training.config` and :mod:`~ppl_audit.training.loop` (what every trainer shares),
:mod:`~ppl_audit.training.report` (the training report), :mod:`~ppl_audit.training.cost` (what
training a missing card will take on this machine, measured before it starts) and
:mod:`~ppl_audit.training.members` (cards whose members train apart, side by side). Model modules register their trainer;
nothing here imports a model module except by the lazy names in ``BUILTIN_TRAINERS``.

A model card's ``[model] kind`` names a :class:`Trainer` in a registry. The
trainer builds the untrained module from the card (validating it), trains it
(reading its data through :mod:`ppl_audit.data` when it needs any) and says
how to present it. :func:`load_model` does the rest for every kind::

    card -> recipe hash -> CACHE/NAME-HASH.safetensors (+ .json sidecar)
         -> verified load (safetensors, sha256; never unpickled)
         -> or train; refuse (TrainingError, nothing cached) when an [expected] bound is missed; save

The returned :class:`TrainedModel` holds the module, the card and what training
recorded; its ``model`` is what an audit uses, built by the trainer's ``wrap``
(a classifier, a decoder prior; the module itself for kinds without one), so one
loader serves every kind. Each kind's config subclasses :class:`CardConfig`,
which reads the card's tables and runs the shared checks before the kind's own.

A corrupt cache entry (checksum, header or state-dict mismatch) is logged as a
warning and rebuilt. :func:`training_report` turns a loaded model into a
:class:`~ppl_audit.report.Report` (training curves, metrics against the card's
``[expected]`` table, and the trainer's own sections, such as sample grids).

Built-in kinds (listed once, in ``cards.BUILTIN_KINDS``): ``house-rocket-classifier``
(:mod:`ppl_audit.classifiers.house_rocket`),
``lenet-classifier`` (:mod:`ppl_audit.classifiers.lenet`), ``vae``
(:mod:`ppl_audit.generative.vae`) and ``gan`` (:mod:`ppl_audit.generative.gan`).
Their modules are imported only when a card of that kind is used.

Examples
--------
>>> sorted(registered_kinds())
['bayesian-lenet-classifier', 'class-gan', 'class-vae', 'gan', 'gan-ensemble', 'gwin', 'house-rocket-classifier', 'lenet-classifier', 'sdim-classifier', 'vae', 'vae-ensemble']
>>> trained = load_model("mnist-vae", data_dir="/path/to/data")  # doctest: +SKIP
>>> trained.module.decoder(torch.zeros(1, 5)).shape  # doctest: +SKIP
torch.Size([1, 1, 28, 28])
"""


from ppl_audit.training.config import (
    CardConfig,
    card_config,
    check_adversarial_fields,
    check_field,
    check_training_fields,
)
from ppl_audit.training.loader import (
    EXPECTED_MAX_PREFIX,
    EXPECTED_MIN_PREFIX,
    SECONDS_SUFFIX,
    TRAINING_BYTES_PER_PARAMETER,
    TrainedModel,
    as_card,
    before_training,
    check_cache_destination,
    check_cache_entry_place,
    check_expected,
    check_kind,
    check_model_fits,
    load_model,
    refuse_missed_expectations,
)
from ppl_audit.training.loop import (
    DEFAULT_TEST_SPLIT,
    DEFAULT_TRAIN_SPLIT,
    EVAL_CHUNK,
    DataConfig,
    Stopwatch,
    load_training_data,
    minibatches,
    seeded,
)
from ppl_audit.training.members import MemberTraining, members_on, train_member
from ppl_audit.training.registry import BUILTIN_TRAINERS, Trainer, TrainResult, get_trainer, register_trainer, registered_kinds
from ppl_audit.training.report import curve_figures, training_report

__all__ = [
    "BUILTIN_TRAINERS",
    "DEFAULT_TEST_SPLIT",
    "DEFAULT_TRAIN_SPLIT",
    "EVAL_CHUNK",
    "EXPECTED_MAX_PREFIX",
    "EXPECTED_MIN_PREFIX",
    "SECONDS_SUFFIX",
    "TRAINING_BYTES_PER_PARAMETER",
    "CardConfig",
    "DataConfig",
    "MemberTraining",
    "Stopwatch",
    "TrainResult",
    "TrainedModel",
    "Trainer",
    "as_card",
    "before_training",
    "card_config",
    "check_adversarial_fields",
    "check_cache_destination",
    "check_cache_entry_place",
    "check_expected",
    "check_kind",
    "check_field",
    "check_model_fits",
    "check_training_fields",
    "curve_figures",
    "get_trainer",
    "load_model",
    "load_training_data",
    "members_on",
    "minibatches",
    "refuse_missed_expectations",
    "register_trainer",
    "registered_kinds",
    "seeded",
    "train_member",
    "training_report",
]
