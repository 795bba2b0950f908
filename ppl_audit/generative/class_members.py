"""Per-class generators trained apart: ``[training] members_apart = true`` on a ``class-vae`` or ``class-gan``
card, and the two kinds' trainers.

By default a card's class models train together: one batched model, one Adam over the stacked
parameters, one random stream for every class's batches and noise, which is fastest on one machine
(:func:`~ppl_audit.generative.class_generators.train_class_vae`, ``train_class_gan``). With
``members_apart`` each class's model is a training of its own: initialised under seed ``seed + c``, fed
from a stream seeded ``seed + c`` with the same number of steps an epoch as the batched training, and
evaluated on its class's test images. A member is then the same wherever it trains, so an executor can
train the classes side by side (:mod:`ppl_audit.training.members`), and the card's weights are those of
the members trained one after another here. The option is part of the recipe (another cache entry): the
weights differ from the batched training's, as any change of random stream changes them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ppl_audit.cards import ModelCard
from ppl_audit.generative.class_generators import (
    GAN_KIND,
    GAN_TASK,
    VAE_KIND,
    VAE_TASK,
    ClassGAN,
    ClassGANConfig,
    ClassVAEConfig,
    build_class_gan,
    build_class_vae,
    class_data,
    class_indices,
    class_sample_sections,
    critic_gaps,
    fit_class_gans,
    fit_class_vaes,
    generator_steps_per_epoch,
    own_class_elbo,
    steps_per_epoch,
    train_class_gan,
    train_class_vae,
)
from ppl_audit.generative.vae_ensemble import VAEEnsemble
from ppl_audit.progress import ProgressFn
from ppl_audit.training import Stopwatch, Trainer, TrainResult
from ppl_audit.training.members import MemberTraining


def _own_class(data, c: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ``c``'s images of ``data`` and their labels as 0: a one-member model's class."""
    idx = class_indices(data.labels.cpu(), classes)[c].to(data.images.device)
    return data.images[idx], torch.zeros(len(idx), dtype=data.labels.dtype, device=data.labels.device)


def _stacked(card: ModelCard, build, members: Sequence[TrainResult]) -> torch.nn.Module:
    """The card's module holding each one-member module's parameters at its class's place."""
    module = build(card)
    states = [m.module.state_dict() for m in members]
    module.load_state_dict({key: torch.cat([state[key] for state in states]) for key in states[0]})
    return module.eval()


def _member_task(task: str, c: int, classes: int) -> str:
    return f"{task}: class {c} ({c + 1}/{classes})"


# --------------------------------------------------------------------------- per-class VAEs


def build_class_vae_member(card: ModelCard, c: int) -> VAEEnsemble:
    """Class ``c``'s VAE alone, untrained (a one-member ensemble, initialised under seed ``seed + c``)."""
    config = ClassVAEConfig.from_card(card)
    return VAEEnsemble(1, config.latent_dim, config.hidden, config.likelihood, seed=config.seed + c)


def train_class_vae_member(card: ModelCard, c: int, *, data_dir=None, device="auto",
                           progress: ProgressFn | None = None) -> TrainResult:
    """Class ``c``'s VAE trained alone on its class (``members_apart``)."""
    config = ClassVAEConfig.from_card(card)
    train, test = class_data(card, config.classes, data_dir, device)
    return _vae_member(card, config, c, train, test, progress)


def _vae_member(card, config: ClassVAEConfig, c: int, train, test, progress) -> TrainResult:
    watch = Stopwatch()
    images, labels = _own_class(train, c, config.classes)
    vae = build_class_vae_member(card, c).to(images.device)
    steps = steps_per_epoch(train.labels, config.classes, config.batch_size)  # as the batched training's
    history = fit_class_vaes(vae, images.flatten(1), labels, steps, config, torch.Generator().manual_seed(config.seed + c),
                             progress, name=card.name, class_ids=[c], task=_member_task(VAE_TASK, c, config.classes))
    test_images, test_labels = _own_class(test, c, config.classes)
    metrics = {"test_elbo_nats": own_class_elbo(vae, test_images, test_labels)[0], "num_train": len(images),
               "num_test": len(test_images), "seconds": float(watch)}
    return TrainResult(vae.cpu(), metrics, {"loss": [row[0] for row in history]})


def join_class_vaes(card: ModelCard, members: Sequence[TrainResult]) -> TrainResult:
    """The card's per-class VAEs, metrics and curves from its classes' results (in class order)."""
    per_class = [m.metrics["test_elbo_nats"] for m in members]
    metrics = {"test_elbo_nats": sum(per_class) / len(members), "test_elbo_nats_per_class": per_class,
               "classes": len(members), "num_train": sum(m.metrics["num_train"] for m in members),
               "num_test": sum(m.metrics["num_test"] for m in members),
               "seconds": sum(m.metrics["seconds"] for m in members)}
    curves = {"unit": "epoch", "panels": {"negative ELBO per image (nats), own class": {
        f"class {k}": m.history["loss"] for k, m in enumerate(members)}}}
    return TrainResult(_stacked(card, build_class_vae, members), metrics, curves)


def train_class_vae_card(card: ModelCard, *, data_dir=None, device="auto",
                         progress: ProgressFn | None = None) -> TrainResult:
    """A ``class-vae`` card's training: batched (:func:`train_class_vae`), or its classes one after another
    with ``members_apart``."""
    config = ClassVAEConfig.from_card(card)
    if not config.members_apart:
        return train_class_vae(card, data_dir=data_dir, device=device, progress=progress)
    train, test = class_data(card, config.classes, data_dir, device)
    return join_class_vaes(card, [_vae_member(card, config, c, train, test, progress) for c in range(config.classes)])


# --------------------------------------------------------------------------- per-class GANs


def build_class_gan_member(card: ModelCard, c: int) -> ClassGAN:
    """Class ``c``'s GAN alone, untrained (initialised under seed ``seed + c``)."""
    config = ClassGANConfig.from_card(card)
    return ClassGAN(1, config.latent_dim, config.generator_hidden, config.critic_hidden, seed=config.seed + c)


def train_class_gan_member(card: ModelCard, c: int, *, data_dir=None, device="auto",
                           progress: ProgressFn | None = None) -> TrainResult:
    """Class ``c``'s GAN trained alone on its class (``members_apart``)."""
    config = ClassGANConfig.from_card(card)
    train, test = class_data(card, config.classes, data_dir, device)
    return _gan_member(card, config, c, train, test, progress)


def _gan_member(card, config: ClassGANConfig, c: int, train, test, progress) -> TrainResult:
    watch = Stopwatch()
    images, labels = _own_class(train, c, config.classes)
    gan = build_class_gan_member(card, c).to(images.device)
    g_steps = generator_steps_per_epoch(train.labels, config.classes, config.batch_size, config.critic_steps)
    history = fit_class_gans(gan, images.flatten(1), labels, g_steps, config,
                             torch.Generator().manual_seed(config.seed + c), progress, name=card.name, class_ids=[c],
                             task=_member_task(GAN_TASK, c, config.classes))
    test_images, test_labels = _own_class(test, c, config.classes)
    metrics = {"test_critic_gap": critic_gaps(gan, test_images, test_labels)[0], "generator_steps": config.epochs * g_steps,
               "num_train": len(images), "num_test": len(test_images), "seconds": float(watch)}
    return TrainResult(gan.cpu(), metrics, {key: [row[0] for row in rows] for key, rows in history.items()})


def join_class_gans(card: ModelCard, members: Sequence[TrainResult]) -> TrainResult:
    """The card's per-class GANs, metrics and curves from its classes' results (in class order)."""
    gaps = [m.metrics["test_critic_gap"] for m in members]
    metrics = {"test_critic_gap": sum(gaps) / len(members), "test_critic_gap_per_class": gaps,
               "generator_steps": members[0].metrics["generator_steps"], "classes": len(members),
               "num_train": sum(m.metrics["num_train"] for m in members),
               "num_test": sum(m.metrics["num_test"] for m in members),
               "seconds": sum(m.metrics["seconds"] for m in members)}
    curves = {"unit": "epoch", "panels": {
        "critic gap D(real) - D(fake), training batches": {f"class {k}": m.history["gap"] for k, m in enumerate(members)},
        "critic loss (with gradient penalty)": {f"class {k}": m.history["critic_loss"] for k, m in enumerate(members)}}}
    return TrainResult(_stacked(card, build_class_gan, members), metrics, curves)


def train_class_gan_card(card: ModelCard, *, data_dir=None, device="auto",
                         progress: ProgressFn | None = None) -> TrainResult:
    """A ``class-gan`` card's training: batched (:func:`train_class_gan`), or its classes one after another
    with ``members_apart``."""
    config = ClassGANConfig.from_card(card)
    if not config.members_apart:
        return train_class_gan(card, data_dir=data_dir, device=device, progress=progress)
    train, test = class_data(card, config.classes, data_dir, device)
    return join_class_gans(card, [_gan_member(card, config, c, train, test, progress) for c in range(config.classes)])


# --------------------------------------------------------------------------- the kinds' trainers


def _apart_count(config_type):
    """``count(card)``: the classes of a card that trains them apart, else 0 (trained together)."""
    def count(card: ModelCard) -> int:
        config = config_type.from_card(card)
        return config.classes if config.members_apart else 0
    return count


def _total_steps(config_type):
    """``total_steps(card, timed)``: apart, the timed task is one class's training of ``classes``."""
    def total(card: ModelCard, timed_total: int) -> int:
        config = config_type.from_card(card)
        return timed_total * config.classes if config.members_apart else timed_total
    return total


VAE_TRAINER = Trainer(
    kind=VAE_KIND,
    build=build_class_vae,
    train=train_class_vae_card,
    headline=("test_elbo_nats", "test ELBO on own class, mean over classes (nats per image)"),
    report_sections=class_sample_sections,
    description="one MLP VAE per class, trained together or apart (classification by synthesis, Wang et al. 2017)",
    total_steps=_total_steps(ClassVAEConfig),
    members=MemberTraining(count=_apart_count(ClassVAEConfig), build=build_class_vae_member,
                           train=train_class_vae_member, join=join_class_vaes),
)

GAN_TRAINER = Trainer(
    kind=GAN_KIND,
    build=build_class_gan,
    train=train_class_gan_card,
    headline=("test_critic_gap", "test critic gap, mean over classes"),
    report_sections=class_sample_sections,
    description="one MLP WGAN-GP per class, trained together or apart (classification by synthesis, Wang et al. "
                "2017)",
    total_steps=_total_steps(ClassGANConfig),
    members=MemberTraining(count=_apart_count(ClassGANConfig), build=build_class_gan_member,
                           train=train_class_gan_member, join=join_class_gans),
)

__all__ = ["GAN_TRAINER", "VAE_TRAINER", "build_class_gan_member", "build_class_vae_member", "join_class_gans",
           "join_class_vaes", "train_class_gan_card", "train_class_gan_member", "train_class_vae_card",
           "train_class_vae_member"]
