"""Lightning set-up: the LightningModule that trains an EncoderForecaster, and the Trainer around it.

Masked MSE on normalised targets (NaN targets — nodata, cloud — carry no weight), an optional
auxiliary nowcast loss for the image encoder, AdamW with a cosine decay over the training budget
(epochs or wall time), early stopping,
best-checkpoint selection and resumable ``last.ckpt``.
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


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               lead_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` is true (0 when none is).

    ``lead_weights`` (one per step of dim 1 of ``(N, lead, ...)`` tensors) makes it the weighted
    mean: each entry counts with its lead's weight.
    """
    mask = mask.to(pred.dtype)
    if lead_weights is not None:
        mask = mask * lead_weights.to(pred.dtype).view(1, -1, *([1] * (mask.dim() - 2)))
    return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1e-12)


class ForecastModule(L.LightningModule):
    """Trains a forecaster on batches from :class:`trafficrnn.data.WindowDataset`.

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
    ema : float, optional
        Decay of an exponential moving average of the weights, updated after every optimiser
        step; validation (hence early stopping and the best checkpoint) scores the averaged
        weights, and :meth:`final_model` returns them. ``None``: no average.
    lead_weights : sequence of float, optional
        Weight of each lead in the forecast loss (training and validation), rescaled to a mean
        of 1; ``None``: equal weights.
    bptt_steps : int, optional
        Training steps backpropagate through the encoder's last ``bptt_steps`` input frames only
        (``grad_steps`` of the model's forward); validation and prediction are unaffected.
    encoded : bool
        Batches hold the frozen encoder's cached cell features, not images (``encoded`` of the
        model's forward); only the parameters that require a gradient are optimised.
    """

    def __init__(self, model: torch.nn.Module, *, horizon: int, lr: float = 2e-3, weight_decay: float = 1e-4,
                 max_epochs: int = 20, nowcast_weight: float = 0.0, inputs=None, ema: float | None = None,
                 lead_weights=None, bptt_steps: int | None = None, encoded: bool = False) -> None:
        super().__init__()
        self.model = model
        self.encoded = bool(encoded)
        self.bptt_steps = bptt_steps
        self.lead_weights = None
        if lead_weights is not None:
            weights = torch.as_tensor([float(w) for w in lead_weights], dtype=torch.float32)
            self.lead_weights = weights * (len(weights) / weights.sum())
        self.ema_model = None
        if ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(ema)), use_buffers=True)
        self.horizon = horizon
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.nowcast_weight = nowcast_weight
        self.inputs = inputs or (lambda batch: {})
        self.history: list[dict[str, float]] = []

    def forward(self, batch: dict[str, torch.Tensor], *, horizon: int | None = None, nowcast: bool = False,
                averaged: bool = False):
        net = self.ema_model.module if averaged and self.ema_model is not None else self.model
        extra = {"grad_steps": self.bptt_steps} if self.training and self.bptt_steps else {}
        if self.encoded:
            extra["encoded"] = True
        return net(batch["x"], horizon=horizon or self.horizon, return_nowcast=nowcast, **self.inputs(batch), **extra)

    def final_model(self) -> torch.nn.Module:
        """The network to keep: the averaged weights when ``ema`` is set, else the trained ones."""
        return self.ema_model.module if self.ema_model is not None else self.model

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema_model is not None:
            self.ema_model.update_parameters(self.model)

    def _loss(self, batch: dict[str, torch.Tensor], averaged: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        want_nowcast = self.nowcast_weight > 0 and "y_in" in batch
        out = self(batch, nowcast=want_nowcast, averaged=averaged)
        pred, nowcast = out if want_nowcast else (out, None)
        weights = None
        if self.lead_weights is not None:
            weights = self.lead_weights[: pred.shape[1]].to(pred.device)
        loss = masked_mse(pred.float(), batch["y"], batch["mask"], weights)
        forecast_loss = loss
        if nowcast is not None:
            loss = loss + self.nowcast_weight * masked_mse(nowcast.float(), batch["y_in"], batch["mask_in"])
        return loss, forecast_loss

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch["x"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        _, forecast_loss = self._loss(batch, averaged=True)
        self.log("val_loss", forecast_loss, prog_bar=True, on_step=False, on_epoch=True,
                 batch_size=batch["x"].shape[0], sync_dist=True)

    def training_progress(self) -> float:
        """Fraction of the training budget spent, in [0, 1]: the larger of the steps done out of
        ``max_epochs`` and, under a ``max_time`` limit, the time spent out of it."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        total = trainer.estimated_stepping_batches
        progress = trainer.global_step / total if math.isfinite(total) and total > 0 else 0.0
        for callback in trainer.callbacks:
            if isinstance(callback, Timer) and callback._duration:
                progress = max(progress, callback.time_elapsed("train") / callback._duration)
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
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train_loss", "val_loss")}
        metrics.update(epoch=trainer.current_epoch, seconds=time.perf_counter() - self._start,
                       lr=float(trainer.optimizers[0].param_groups[0]["lr"]))
        module.history.append(metrics)


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


def make_trainer(*, root: Path, max_epochs: int, patience: int, max_time: float | None, precision: str,
                 accelerator: str, devices: Any, strategy: str, num_nodes: int, progress: bool,
                 validate: bool, deterministic: bool = True) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer with early stopping, best and last checkpoints under ``root``.

    ``max_time`` is in minutes. Returns the trainer and its checkpoint callback (``best_model_path``).
    """
    monitor = "val_loss" if validate else "train_loss"
    checkpoint = ModelCheckpoint(dirpath=root, filename="best", monitor=monitor, mode="min")
    # Lightning's save_last only refreshes last.ckpt when a best checkpoint is saved: a kill after an
    # epoch that did not improve would resume from an older epoch. This one writes it after every epoch.
    last = ModelCheckpoint(dirpath=root, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    callbacks: list[Callback] = [checkpoint, last, History()]
    if patience and validate:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=patience))
    trainer = L.Trainer(
        default_root_dir=root, max_epochs=max_epochs, callbacks=callbacks, logger=False,
        enable_progress_bar=progress, enable_model_summary=False, precision=precision,
        accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
        max_time={"minutes": max_time} if max_time else None, deterministic=deterministic,
        num_sanity_val_steps=0, log_every_n_steps=1,
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
            # the folder is checked by trafficrnn.checkpoints before training (refused when it holds
            # another run's checkpoints); beside its run.json it is rightly not empty
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
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
