"""The training loop every trained method shares: params, datasets, transforms, the epoch
loop with early stopping, evaluation passes and weight-space interpolation.

``finetune``, ``distill``, ``pretrain`` and the domain-adaptation networks build on these
(as tllib's algorithms share ``tllib.modules``); no method imports another's internals.

The loop: AdamW with the head at ``lr`` and moving backbone blocks at
``lr * backbone_lr_mult``, a cosine schedule :math:`\\eta_t = \\tfrac{1}{2}\\eta_0
(1 + \\cos(\\pi t / T))`, bf16 autocast and channels-last on CUDA, gradient-norm
clipping, and early stopping on validation accuracy (then cross-entropy) with the best
epoch's weights restored. Frozen blocks keep their BatchNorm statistics (eval mode).

L2-SP (Li et al., 2018, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks"), when ``l2sp`` is set: the loss gains
:math:`\\tfrac{\\alpha}{2}\\lVert w_S - w_S^0\\rVert^2 + \\tfrac{\\beta}{2}\\lVert w_h\\rVert^2`,
:math:`w_S` the moving backbone weights, :math:`w_S^0` their values when training starts (the
pretrained ones), :math:`w_h` the classifier; it replaces AdamW's weight decay (set to 0),
which would pull the backbone toward 0 instead of toward its start.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from app.transfer.data import Progress
from app.transfer.finetune_parts import (
    classifier_param_names,
    freeze_except,
    set_train_mode,
    trainable_parameters,
)
from app.transfer.heads import LinearHead
from app.transfer.methods.base import MAX_GRID, Seed
from app.transfer.preprocess import Preprocessing, eval_transform

#: What trains: a preset, or block names (``stem``, ``blocks.3``, ...).
Trainable = (
    Literal["head", "last_n_blocks", "all"]
    | Annotated[
        list[Annotated[str, Field(max_length=100)]], Field(min_length=1, max_length=MAX_GRID)
    ]
)


class L2SP(BaseModel):
    """The L2-SP penalty's strengths (Li et al. 2018 use alpha 0.1 or 0.01, beta 0.01)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(
        0.01, gt=0, le=100, description="Pull of the moving backbone weights toward the start."
    )
    beta: float = Field(0.01, ge=0, le=100, description="L2 on the classifier's weights.")


class TrainingParams(BaseModel):
    """The loop's knobs; a method's params extend them (``FinetuneParams``, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trainable: Trainable = "last_n_blocks"
    n: int = Field(2, ge=1, le=100, description="Blocks that train with `last_n_blocks`.")
    epochs: int = Field(15, ge=1, le=1000)
    lr: float = Field(1e-3, gt=0, le=1, description="Learning rate of the classifier.")
    backbone_lr_mult: float = Field(0.1, ge=0, le=10, description="Backbone lr = lr * this.")
    weight_decay: float = Field(1e-4, ge=0, le=1)
    batch_size: int = Field(16, ge=1, le=1024)
    augment: bool = Field(True, description="random-resized-crop, flip, colour jitter (timm)")
    max_minutes: float = Field(30.0, gt=0, le=24 * 60)
    patience: int = Field(5, ge=1, le=1000, description="Epochs without improvement to stop.")
    linear_probe_init: bool = Field(True, description="Start the head from the linear probe.")
    holdout_fraction: float = Field(0.2, gt=0, lt=0.6)
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clipping.")
    bn_eval: bool = Field(
        False,
        description="Every BatchNorm layer keeps its pretrained statistics (eval mode), also "
        "in blocks that train (their scale and shift still learn).",
    )
    l2sp: L2SP | None = Field(
        None,
        description="L2-SP: penalise the backbone's distance to its pretrained weights "
        "(alpha/2 * |w - w0|^2) and the classifier (beta/2 * |w_head|^2) instead of weight "
        "decay; null: plain AdamW weight decay.",
    )
    seed: Seed = 0


def device_for_training() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ImageDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, images: list[Any], labels: np.ndarray, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def train_transform(cfg: Preprocessing, augment: bool) -> Any:
    from timm.data import create_transform

    if not augment:
        return eval_transform(cfg)
    return create_transform(
        input_size=cfg.input_size, is_training=True, scale=(0.6, 1.0), hflip=0.5,
        color_jitter=0.2, interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std,
    )  # fmt: skip


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Any, device: torch.device) -> tuple[np.ndarray, float]:
    """Probabilities and mean cross-entropy over ``loader``."""
    model.eval()
    probs, losses = [], []
    for x, y in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x.to(device, memory_format=torch.channels_last)).float()
        losses.append(F.cross_entropy(logits, y.to(device), reduction="sum").item())
        probs.append(logits.softmax(-1).cpu().numpy())
    return np.concatenate(probs), sum(losses) / max(1, len(loader.dataset))


def setup_training(
    model: torch.nn.Module, p: TrainingParams
) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter], list[torch.nn.Module]]:
    """Freeze what ``p.trainable`` leaves out; AdamW with the head at ``lr`` and the
    backbone at ``lr * backbone_lr_mult``. Returns (optimizer, moving params, the norm
    layers that stay in eval mode: frozen ones, or with ``p.bn_eval`` every BatchNorm)."""
    frozen_norms = freeze_except(model, trainable_parameters(model, p.trainable, p.n))
    if p.bn_eval:
        frozen_norms = [
            m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
    head_params = {id(q) for q in model.get_classifier().parameters()}  # type: ignore[operator]
    moving = [q for q in model.parameters() if q.requires_grad]
    groups = [
        {"params": [q for q in moving if id(q) in head_params], "lr": p.lr},
        {
            "params": [q for q in moving if id(q) not in head_params],
            "lr": p.lr * p.backbone_lr_mult,
        },
    ]
    decay = 0.0 if p.l2sp is not None else p.weight_decay  # L2-SP replaces weight decay
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=decay)
    return optimizer, moving, frozen_norms


def l2sp_penalty(
    model: torch.nn.Module, moving: list[torch.nn.Parameter], cfg: L2SP
) -> Callable[[], torch.Tensor]:
    """:math:`\\tfrac{\\alpha}{2}\\sum_{w \\in S}\\lVert w - w^0\\rVert^2 +
    \\tfrac{\\beta}{2}\\lVert w_h\\rVert^2` over the ``moving`` parameters, :math:`S` those
    outside the classifier (anchored at their values now), :math:`w_h` the classifier's
    weight matrix (its bias is not penalised)."""
    classifier = model.get_classifier()  # type: ignore[operator]
    head_ids = {id(q) for q in classifier.parameters()}
    backbone = [q for q in moving if id(q) not in head_ids]
    anchors = [q.detach().clone() for q in backbone]
    head_weight = classifier.weight

    def penalty() -> torch.Tensor:
        pulled = sum(((q - a) ** 2).sum() for q, a in zip(backbone, anchors, strict=True))
        return cfg.alpha / 2 * pulled + cfg.beta / 2 * (head_weight**2).sum()

    return penalty


#: ``loss_fn(logits (B, C), targets of the batch as the loader yields them) -> scalar``
LossFn = Callable[[torch.Tensor, Any], torch.Tensor]


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target.to(logits.device))


def train_epoch(
    model: torch.nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    moving: list[torch.nn.Parameter],
    max_grad_norm: float,
    on_batch: Callable[[int], None] = lambda step: None,
    loss_fn: LossFn = cross_entropy,
) -> float:
    """One pass over ``loader`` (model already in train mode); returns the mean loss.

    bf16 autocast on CUDA, channels-last inputs, gradient-norm clipping over ``moving``.
    """
    total, seen = 0.0, 0
    for step, (x, t) in enumerate(loader):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x.to(device, memory_format=torch.channels_last)).float()
            loss = loss_fn(logits, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(moving, max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total, seen = total + loss.item() * len(x), seen + len(x)
        on_batch(step)
    return total / max(1, seen)


def run_epochs(
    model: torch.nn.Module,
    train_loader: Any,
    val_loader: Any | None,
    y_val: np.ndarray,
    p: TrainingParams,
    device: torch.device,
    progress: Progress,
    loss_fn: LossFn = cross_entropy,
    evaluate_start: bool = False,
    on_eval: Callable[[int, np.ndarray], None] | None = None,
    stop_after: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Train ``model`` (classifier already sized) under ``p``: AdamW with a cosine schedule,
    early stopping on validation accuracy (then loss), best epoch's weights restored.

    With ``evaluate_start`` (and a validation split) the untrained model is measured first
    as epoch 0 and is itself a candidate: an epoch must beat it to be kept, and when none
    does the weights come back unchanged (best epoch 0). ``on_eval(epoch, probabilities)``
    sees every validation pass (the model still holds that epoch's weights);
    ``stop_after`` ends training after that epoch of the ``p.epochs`` schedule.

    Returns the per-epoch history and the best epoch. Progress runs from 0.05 to 0.95.
    """
    optimizer, moving, frozen_norms = setup_training(model, p)
    penalty = l2sp_penalty(model, moving, p.l2sp) if p.l2sp is not None else None

    def objective(logits: torch.Tensor, target: Any) -> torch.Tensor:
        loss = loss_fn(logits, target)
        return loss if penalty is None else loss + penalty()

    last = min(p.epochs, stop_after if stop_after is not None else p.epochs)
    steps = p.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(1, steps)))
    )
    history: list[dict[str, Any]] = []
    best_state, best_key, best_epoch, since_best = (
        copy.deepcopy(model.state_dict()),
        (-1.0, 0.0),
        0,
        0,
    )
    if evaluate_start and val_loader is not None:
        progress(0.05, "measuring the starting point")
        val_probs, val_loss = predict(model, val_loader, device)
        val_acc = float((val_probs.argmax(1) == y_val).mean())
        if on_eval is not None:
            on_eval(0, val_probs)
        history.append({"epoch": 0, "val_accuracy": val_acc, "val_loss": val_loss})
        best_key = (val_acc, -val_loss)
        progress(0.05, "measured the starting point", history[-1])
    started = time.monotonic()
    for epoch in range(1, last + 1):
        epoch_start = time.monotonic()
        set_train_mode(model, frozen_norms)
        train_loss = train_epoch(
            model, train_loader, optimizer, scheduler, device, moving, p.max_grad_norm,
            on_batch=lambda step, epoch=epoch: progress(
                0.05 + 0.9 * (epoch - 1 + (step + 1) / len(train_loader)) / last,
                f"epoch {epoch}/{last}",
            ),  # cancellation takes effect within one batch
            loss_fn=objective,
        )  # fmt: skip
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
        if val_loader is not None:
            val_probs, val_loss = predict(model, val_loader, device)
            val_acc = float((val_probs.argmax(1) == y_val).mean())
            if on_eval is not None:
                on_eval(epoch, val_probs)
            record.update(val_accuracy=val_acc, val_loss=val_loss)
            key = (val_acc, -val_loss)
        else:
            key = (float(epoch), 0.0)  # no validation split: keep the last epoch
        elapsed = time.monotonic() - started
        record.update(
            seconds=round(time.monotonic() - epoch_start, 3),
            eta_seconds=round(elapsed / epoch * (last - epoch), 1),
        )
        history.append(record)
        if key > best_key:
            best_key, best_state, best_epoch, since_best = (
                key,
                copy.deepcopy(model.state_dict()),
                epoch,
                0,
            )
        else:
            since_best += 1
        progress(0.05 + 0.9 * epoch / last, f"epoch {epoch}/{last}", record)
        if since_best >= p.patience or elapsed > p.max_minutes * 60:
            break
    model.load_state_dict(best_state)
    return history, best_epoch


def split_classifier(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], LinearHead]:
    """A trained timm network as (backbone tensors without the classifier, its head)."""
    model.cpu()
    classifier = model.get_classifier()  # type: ignore[operator]
    skip = classifier_param_names(model)
    state = {
        k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k not in skip
    }
    head = LinearHead(classifier.weight.detach().clone(), classifier.bias.detach().clone())
    return state, head


def interpolate_states(
    start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT weights :math:`\\theta(\\alpha) = (1-\\alpha)\\,\\theta_0 + \\alpha\\,\\theta_1`
    over every floating tensor (BatchNorm statistics included); counters come from ``end``.
    ``alpha`` 0 and 1 give ``start`` and ``end`` exactly."""
    if alpha == 0:
        return {k: v.clone() for k, v in start.items()}
    if alpha == 1:
        return {k: v.clone() for k, v in end.items()}
    return {
        k: torch.lerp(start[k], v, alpha) if v.is_floating_point() else v.clone()
        for k, v in end.items()
    }
