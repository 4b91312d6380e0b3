"""Lightning set-up: the LightningModule that trains an EncoderForecaster, and the Trainer around it.

Masked MSE on normalised targets (NaN targets — nodata, cloud — carry no weight), an optional
auxiliary nowcast loss for the image encoder, AdamW with a cosine decay over the training budget
(epochs or wall time), early stopping,
best-checkpoint selection and resumable ``last.ckpt``; under a time limit, a :class:`Deadline` that
ends the training in time for the validation and checkpoints after its last batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, Timer

log = logging.getLogger(__name__)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` is true (0 when none is)."""
    mask = mask.to(pred.dtype)
    return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1e-12)


def masked_pinball(
    quantiles: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, levels: tuple[float, ...]
) -> torch.Tensor:
    """Pinball loss of ``quantiles`` (N, H, Q, C, ...) at ``levels`` (Q) against ``target``
    (N, H, C, ...), averaged over the levels and the entries where ``mask`` is true (0 when none
    is): ``tau * (y - q)`` where ``y >= q``, ``(1 - tau) * (q - y)`` below."""
    taus = torch.tensor(levels, dtype=quantiles.dtype, device=quantiles.device)
    taus = taus.view(1, 1, -1, *([1] * (quantiles.dim() - 3)))
    weight = mask[:, :, None].to(quantiles.dtype).expand_as(quantiles)
    diff = torch.where(weight > 0, target[:, :, None] - quantiles, torch.zeros_like(quantiles))
    loss = torch.maximum(taus * diff, (taus - 1) * diff)
    return (loss * weight).sum() / weight.sum().clamp_min(1e-12)


class ForecastModule(L.LightningModule):
    """Trains a forecaster on batches from :class:`trafficrnn.timeaxis.WindowDataset`.

    Parameters
    ----------
    model : torch.nn.Module
        An ``EncoderForecaster``.
    horizon : int
        Lead steps to unroll.
    lr, weight_decay : float
        AdamW settings; the learning rate decays with a cosine from ``lr`` to ``lr / 20`` over the
        training budget: ``max_epochs``, or the Trainer's ``max_time`` when that ends first.
    max_epochs : int
    nowcast_weight : float
        Weight of the auxiliary nowcast loss (image path only).
    inputs : callable
        ``inputs(batch) -> dict`` of keyword arguments for ``model.forward`` besides ``x``.
    bptt_steps : int, optional
        Training steps backpropagate through the encoder's last ``bptt_steps`` input frames only
        (``grad_steps`` of the model's forward); validation and prediction are unaffected.
    encoded : bool
        Batches hold the frozen encoder's cached cell features, not images (``encoded`` of the
        model's forward); only the parameters that require a gradient are optimised.

    A model with a quantile head (``model.quantiles``) adds the pinball loss of its quantiles
    (:func:`masked_pinball`, weight :attr:`PINBALL_WEIGHT`) to the training loss; its gradient
    reaches the head alone. ``train_loss`` and ``val_loss`` (early stopping, the best checkpoint)
    stay those of the point forecast; the pinball losses are logged as ``train_pinball`` and
    ``val_pinball``.
    """

    #: weight of the quantile head's pinball loss in the training loss
    PINBALL_WEIGHT = 1.0

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        horizon: int,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        max_epochs: int = 20,
        nowcast_weight: float = 0.0,
        inputs=None,
        bptt_steps: int | None = None,
        encoded: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.encoded = bool(encoded)
        self.bptt_steps = bptt_steps
        self.horizon = horizon
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.nowcast_weight = nowcast_weight
        self.inputs = inputs or (lambda batch: {})
        self.history: list[dict[str, float]] = []

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        *,
        horizon: int | None = None,
        nowcast: bool = False,
        quantiles: bool = False,
    ):
        extra = {"grad_steps": self.bptt_steps} if self.training and self.bptt_steps else {}
        if self.encoded:
            extra["encoded"] = True
        if quantiles:
            extra["return_quantiles"] = True
        return self.model(
            batch["x"],
            horizon=horizon or self.horizon,
            return_nowcast=nowcast,
            **self.inputs(batch),
            **extra,
        )

    def _loss(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The point losses (forecast plus weighted nowcast), the forecast loss alone, and the
        quantile head's pinball loss (None without a head)."""
        want_nowcast = self.nowcast_weight > 0 and "y_in" in batch
        levels = getattr(self.model, "quantiles", None)
        out = self(batch, nowcast=want_nowcast, quantiles=levels is not None)
        out = out if isinstance(out, tuple) else (out,)
        pred, nowcast = out[0], (out[1] if want_nowcast else None)
        loss = masked_mse(pred.float(), batch["y"], batch["mask"])
        forecast_loss = loss
        if nowcast is not None:
            loss = loss + self.nowcast_weight * masked_mse(
                nowcast.float(), batch["y_in"], batch["mask_in"]
            )
        pinball = None
        if levels is not None:
            pinball = masked_pinball(out[-1].float(), batch["y"], batch["mask"], levels)
        return loss, forecast_loss, pinball

    def training_step(self, batch, batch_idx):
        loss, _, pinball = self._loss(batch)
        size = batch["x"].shape[0]
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=size)
        if pinball is None:
            return loss
        self.log("train_pinball", pinball, on_step=False, on_epoch=True, batch_size=size)
        return loss + self.PINBALL_WEIGHT * pinball

    def validation_step(self, batch, batch_idx):
        _, forecast_loss, pinball = self._loss(batch)
        size = batch["x"].shape[0]
        self.log(
            "val_loss",
            forecast_loss,
            prog_bar=True,
            on_step=False,
            on_epoch=True,
            batch_size=size,
            sync_dist=True,
        )
        if pinball is not None:
            self.log(
                "val_pinball",
                pinball,
                on_step=False,
                on_epoch=True,
                batch_size=size,
                sync_dist=True,
            )

    def training_progress(self) -> float:
        """Fraction of the training budget spent, in [0, 1]: the larger of the steps done out of
        ``max_epochs`` and, under a ``max_time`` limit, the time spent out of it (a resumed run's
        earlier time included) and out of the time the :class:`Deadline` leaves to batches."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        total = trainer.estimated_stepping_batches
        progress = trainer.global_step / total if math.isfinite(total) and total > 0 else 0.0
        for callback in trainer.callbacks:
            if isinstance(callback, Timer) and callback._duration:
                progress = max(progress, callback.time_elapsed("train") / callback._duration)
            elif isinstance(callback, Deadline):
                progress = max(progress, callback.progress(trainer))
        return min(max(progress, 0.0), 1.0)

    def _lr_factor(self, _step: int) -> float:
        """Cosine decay from 1 to 1/20 over the training budget (epochs or time, whichever ends first)."""
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * self.training_progress()))

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        # stepped every batch and driven by the budget actually spent: a run stopped by max_time
        # still ends at a low learning rate, where a per-epoch cosine over max_epochs would not
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class History(Callback):
    """Records per-epoch losses, wall time and learning rate on the module (``module.history``)."""

    def on_train_start(self, trainer, module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k in ("train_loss", "val_loss", "train_pinball", "val_pinball")
        }
        metrics.update(
            epoch=trainer.current_epoch,
            seconds=time.perf_counter() - self._start,
            lr=float(trainer.optimizers[0].param_groups[0]["lr"]),
        )
        module.history.append(metrics)


class Deadline(Callback):
    """Ends the training where another batch, and the validation and checkpoints after it, would
    end past ``deadline`` (a :func:`time.perf_counter` value), or past the Trainer's ``max_time``.

    Lightning's own ``max_time`` stops once a batch has ended past the limit: that batch, then
    the validation of the cut epoch, run past it (a batch of images can take many seconds). This
    callback decides after each batch whether the next one fits, with estimates of a batch (the
    median of the last few) and of what follows an epoch's last batch (the validation,
    checkpoints and epoch hooks: measured once an epoch has ended, estimated from the validation
    batches before); when it does not, training stops there and the cut epoch is validated. At
    least one batch trains, whatever the estimates say.
    """

    #: seconds of a validation batch per training batch, until a validation has been timed
    VAL_SHARE = 0.5

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self._batches: list[float] = []
        self._tail: float | None = None
        self._batch_began: float | None = None
        self._epoch_ended: float | None = None
        self._began: float | None = None
        self._progress = 0.0

    def _left(self, trainer) -> float:
        left = math.inf if self.deadline is None else self.deadline - time.perf_counter()
        for callback in trainer.callbacks:
            if isinstance(callback, Timer) and callback._duration:
                left = min(left, callback.time_remaining("train"))
        return left

    def _tail_estimate(self, trainer, batch: float) -> float:
        if self._tail is not None:
            return 1.2 * self._tail
        val = trainer.num_val_batches
        val = sum(val) if isinstance(val, list) else val
        return self.VAL_SHARE * batch * (val if math.isfinite(val) else 1)

    def _step(self) -> float:
        recent = sorted(self._batches[-5:])
        return recent[len(recent) // 2] if recent else 0.0

    def progress(self, trainer) -> float:
        """Share of this run's training time spent, up to where the rule of :meth:`on_train_batch_end`
        stops it (the learning rate ends its decay there); called during a batch (the scheduler's step)."""
        if self._began is None:
            return 0.0
        now = time.perf_counter()
        step = max(self._step(), now - self._batch_began if self._batch_began is not None else 0.0)
        spent = now - self._began
        usable = spent + self._left(trainer) - step - self._tail_estimate(trainer, step)
        # never back: estimates that improve must not raise the learning rate again
        self._progress = max(self._progress, 1.0 if usable <= 0 else min(spent / usable, 1.0))
        return self._progress

    def on_train_start(self, trainer, module) -> None:
        self._began = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._batch_began = time.perf_counter()
        if self._epoch_ended is not None:  # what followed the last epoch's last batch
            self._tail = self._batch_began - self._epoch_ended
            self._epoch_ended = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batch_began is not None:
            self._batches.append(now - self._batch_began)
        last = batch_idx + 1 >= trainer.num_training_batches
        if last:
            self._epoch_ended = now
        if trainer.should_stop:
            return
        step = self._step()
        tail = self._tail_estimate(trainer, step)
        # another batch, and the validation after it (after the last batch: this epoch's one too)
        needed = step + tail * (2 if last else 1)
        stop = self._left(trainer) < needed
        if trainer.strategy.broadcast(stop):  # every rank stops after the same batch
            trainer.should_stop = True  # Lightning then validates the (cut) epoch and ends the fit


def epochs_trained(trainer: L.Trainer) -> int | float:
    """Epochs the run trained: whole ones as an ``int``, a fraction when the last epoch was cut,
    e.g. ``0.5`` for 4 of its 8 batches (counted from the optimiser steps, a run resumed included)."""
    per_epoch = trainer.num_training_batches
    if not per_epoch or not math.isfinite(per_epoch):
        return int(trainer.current_epoch)
    return epoch_fraction(int(trainer.global_step), int(per_epoch))


def epoch_fraction(batches: int, per_epoch: int) -> int | float:
    """``batches`` trained as epochs of ``per_epoch``: an ``int`` when whole, else a fraction to 2
    decimals, or to as many as it takes not to look whole (1 of 2,000 batches: ``0.0005``)."""
    whole, rest = divmod(int(batches), int(per_epoch))
    if rest == 0:
        return int(whole)
    value = batches / per_epoch
    for digits in range(2, 7):
        if not round(value, digits).is_integer():
            return round(value, digits)
    return value


class EpochSampler(torch.utils.data.Sampler):
    """Shuffles with a permutation drawn from ``(seed, epoch)`` alone, so that a run resumed at epoch k
    sees the same batches as an uninterrupted one (a shared generator would restart its sequence).

    Lightning calls :meth:`set_epoch` before every epoch (also after a resume); it is forwarded to
    the dataset (``WindowDataset`` draws its random crops from ``(seed, epoch, index)``).
    """

    def __init__(self, dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(len(self.dataset), generator=generator).tolist())


def make_trainer(
    *,
    root: Path,
    max_epochs: int,
    patience: int,
    max_time: float | None,
    precision: str,
    accelerator: str,
    devices: Any,
    strategy: str,
    num_nodes: int,
    progress: bool,
    validate: bool,
    deterministic: bool = True,
    deadline: float | None = None,
) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer with early stopping, best and last checkpoints under ``root``.

    ``max_time`` is in minutes (the training clock, which a resumed run continues); ``deadline`` a
    :func:`time.perf_counter` value by which training, its last validation and checkpoints included,
    should be over. Under either, a :class:`Deadline` ends the training after the last batch that fits.
    Returns the trainer and its checkpoint callback (``best_model_path``).
    """
    monitor = "val_loss" if validate else "train_loss"
    checkpoint = ModelCheckpoint(dirpath=root, filename="best", monitor=monitor, mode="min")
    # Lightning's save_last only refreshes last.ckpt when a best checkpoint is saved: a kill after an
    # epoch that did not improve would resume from an older epoch. This one writes it after every epoch.
    last = ModelCheckpoint(
        dirpath=root, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    callbacks: list[Callback] = [checkpoint, last, History()]
    if patience and validate:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=patience))
    if max_time or deadline is not None:
        callbacks.append(Deadline(deadline))
    trainer = L.Trainer(
        default_root_dir=root,
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        precision=precision,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        max_time={"minutes": max_time} if max_time else None,
        deterministic=deterministic,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        limit_val_batches=1.0 if validate else 0,
    )
    return trainer, checkpoint


@contextlib.contextmanager
def quiet_lightning(quiet: bool = True):
    """Silence Lightning's start-up chatter (device summary, tips) unless the caller wants logs."""
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    if quiet:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # the folder is checked by trafficrnn.estimation.checkpoints before training (refused when it holds
            # another run's checkpoints); beside its run.json it is rightly not empty
            warnings.filterwarnings(
                "ignore", message=r"Checkpoint directory .* exists and is not empty"
            )
            if quiet:
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``"auto"`` → ``"bf16-mixed"`` on a CUDA device with bf16, ``"16-mixed"`` on older CUDA
    devices, ``"32-true"`` on CPU (pass ``"bf16-mixed"`` explicitly on a CPU with AVX-512 bf16 for
    about 1.8× faster convolutions); other values are passed through."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"
