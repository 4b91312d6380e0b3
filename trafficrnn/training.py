"""Lightning set-up: the LightningModule that trains an EncoderForecaster, and the Trainer around it.

Masked MSE on normalised targets (NaN targets — nodata, cloud — carry no weight), an optional
auxiliary nowcast loss for the image encoder, AdamW with cosine decay, early stopping,
best-checkpoint selection and resumable ``last.ckpt``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

log = logging.getLogger(__name__)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` is true (0 when none is)."""
    mask = mask.to(pred.dtype)
    return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


class ForecastModule(L.LightningModule):
    """Trains a forecaster on batches from :class:`trafficrnn.data.WindowDataset`.

    Parameters
    ----------
    model : torch.nn.Module
        An ``EncoderForecaster``.
    horizon : int
        Lead steps to unroll.
    lr, weight_decay : float
        AdamW settings; the learning rate decays with a cosine over ``max_epochs``.
    max_epochs : int
    nowcast_weight : float
        Weight of the auxiliary nowcast loss (image path only).
    inputs : callable
        ``inputs(batch) -> dict`` of keyword arguments for ``model.forward`` besides ``x``.
    """

    def __init__(self, model: torch.nn.Module, *, horizon: int, lr: float = 2e-3, weight_decay: float = 1e-4,
                 max_epochs: int = 20, nowcast_weight: float = 0.0, inputs=None) -> None:
        super().__init__()
        self.model = model
        self.horizon = horizon
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.nowcast_weight = nowcast_weight
        self.inputs = inputs or (lambda batch: {})
        self.history: list[dict[str, float]] = []

    def forward(self, batch: dict[str, torch.Tensor], *, horizon: int | None = None, nowcast: bool = False):
        return self.model(batch["x"], horizon=horizon or self.horizon, return_nowcast=nowcast, **self.inputs(batch))

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        want_nowcast = self.nowcast_weight > 0 and "y_in" in batch
        out = self(batch, nowcast=want_nowcast)
        pred, nowcast = out if want_nowcast else (out, None)
        loss = masked_mse(pred.float(), batch["y"], batch["mask"])
        forecast_loss = loss
        if nowcast is not None:
            loss = loss + self.nowcast_weight * masked_mse(nowcast.float(), batch["y_in"], batch["mask_in"])
        return loss, forecast_loss

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch["x"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        _, forecast_loss = self._loss(batch)
        self.log("val_loss", forecast_loss, prog_bar=True, on_step=False, on_epoch=True,
                 batch_size=batch["x"].shape[0], sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.max_epochs, 1), eta_min=self.lr / 20)
        return {"optimizer": opt, "lr_scheduler": sched}


class History(Callback):
    """Records per-epoch losses and wall time on the module (``module.history``)."""

    def on_train_start(self, trainer, module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train_loss", "val_loss")}
        metrics.update(epoch=trainer.current_epoch, seconds=time.perf_counter() - self._start)
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
