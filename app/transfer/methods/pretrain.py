"""``pretrain``: learn a backbone from the project's unlabeled images by rotation prediction.

Gidaris et al. (2018), "Unsupervised Representation Learning by Predicting Image
Rotations": every image :math:`x` is shown as :math:`\\mathrm{rot}_k(x)` for
:math:`k \\in \\{0, 90, 180, 270\\}` degrees, and a network :math:`f_\\theta` with a 4-way
linear classifier minimises :math:`-\\frac14 \\sum_k \\log \\mathrm{softmax}(f_\\theta(
\\mathrm{rot}_k(x)))_k`. Recognising the orientation needs the objects' shape, so the
features learned transfer to the domain's real tasks where no ImageNet network fits
(microscopy, thermal cameras, digits).

The network is a small timm architecture built from random weights at a low input size
(CPU budget), trained with ``finetune``'s loop (AdamW, cosine schedule, early stopping on
the rotation accuracy of held-out images). Labels are ignored. Normalisation uses the
per-channel mean and standard deviation of the project's images. The artifact holds the
backbone (``backbone.safetensors``) and the rotation head; the service layer serves it as
a backbone of the tenant under the model's id.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import save as save_tensors

from app.errors import TooFewImages
from app.transfer.artifacts import TrainedModel
from app.transfer.data import Progress, TrainingData, no_progress
from app.transfer.methods import register_method
from app.transfer.methods.base import Method, MethodParams, Seed
from app.transfer.preprocess import Preprocessing, decode_image, eval_transform
from app.transfer.training import (
    TrainingParams,
    device_for_training,
    run_epochs,
    split_classifier,
)

ROTATIONS = ("rot0", "rot90", "rot180", "rot270")


#: timm architectures a tenant may pretrain: small convolutional networks a worker can
#: train in minutes. Never a free string: timm also resolves ``hf-hub:`` and ``local-dir:``.
Architecture = Literal[
    "resnet10t", "resnet14t", "resnet18", "resnet26", "resnet34", "mobilenetv2_100",
    "mobilenetv3_small_100", "mobilenetv3_large_100", "efficientnet_b0", "convnext_atto",
]  # fmt: skip


class PretrainParams(MethodParams):
    architecture: Architecture = Field(
        "resnet10t", description="timm architecture, built from random weights."
    )
    input_size: int = Field(32, ge=16, le=512, description="Square input side in pixels.")
    epochs: int = Field(
        2,
        ge=1,
        le=1000,
        description="Few: on digits the transfer peaks early, longer training specialises "
        "the features to orientation (bench.pretrain_rotation).",
    )
    lr: float = Field(3e-3, gt=0, le=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(64, ge=4, le=4096, description="Rotated images per step.")
    holdout_fraction: float = Field(
        0.1, gt=0, lt=0.6, description="Images kept out to measure rotation accuracy."
    )
    patience: int = Field(5, ge=1, le=1000)
    max_minutes: float = Field(30.0, gt=0, le=24 * 60)
    seed: Seed = 0


class _Rotations(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Item ``4 i + k`` is image ``i`` rotated by ``90 k`` degrees, with target ``k``."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return 4 * len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k = i % 4
        return torch.rot90(self.images[i // 4], k, dims=(1, 2)), k


def normalisation(images: torch.Tensor, side: int) -> Preprocessing:
    """Preprocessing to ``side`` px with the per-channel mean/std of ``images (N, 3, H, W)``
    in [0, 1]."""
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Preprocessing(
        input_size=(3, side, side),
        interpolation="bilinear",
        mean=tuple(round(float(v), 4) for v in images.mean(dim=(0, 2, 3))),  # type: ignore[arg-type]
        std=tuple(round(float(v), 4) for v in std),  # type: ignore[arg-type]
    )


@register_method
class Pretrain(Method):
    name = "pretrain"
    summary = (
        "Self-supervised: learn a backbone from the project's unlabeled images by rotation "
        "prediction; it becomes a backbone of the tenant, usable by every method."
    )
    Params = PretrainParams
    backbone_training = True
    example_params: ClassVar[dict[str, Any]] = {"architecture": "resnet10t", "epochs": 2}
    min_images: int = 8

    def check_data(self, data: TrainingData) -> None:
        if len(data.samples) < self.min_images:
            raise TooFewImages(
                f"Method {self.name!r} needs at least {self.min_images} images (labels are "
                f"not needed); the project has {len(data.samples)}.",
                n_images=len(data.samples),
            )

    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        import timm

        p: PretrainParams = params if isinstance(params, PretrainParams) else PretrainParams()
        self.check_data(data)
        torch.manual_seed(p.seed)
        progress(0.0, "decoding images")
        unit = Preprocessing((3, p.input_size, p.input_size), "bilinear", (0.0,) * 3, (1.0,) * 3)  # type: ignore[arg-type]
        raw = torch.stack(
            [
                eval_transform(unit)(
                    decode_image(
                        data.load_bytes(s), max_pixels=data.max_pixels, draft_size=p.input_size
                    )
                )
                for s in data.samples
            ]
        )
        cfg = normalisation(raw, p.input_size)
        mean, std = torch.tensor(cfg.mean)[:, None, None], torch.tensor(cfg.std)[:, None, None]
        images = (raw - mean) / std
        order = np.random.default_rng(p.seed).permutation(len(images))
        n_val = max(2, round(p.holdout_fraction * len(images)))
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])

        model = timm.create_model(p.architecture, pretrained=False, num_classes=len(ROTATIONS))
        device = device_for_training()
        model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        g = torch.Generator().manual_seed(p.seed)
        train_loader = torch.utils.data.DataLoader(
            _Rotations(images[train_idx]), batch_size=p.batch_size, shuffle=True, generator=g
        )
        val_loader = torch.utils.data.DataLoader(
            _Rotations(images[val_idx]), batch_size=p.batch_size
        )
        loop = TrainingParams(
            trainable="all", epochs=p.epochs, lr=p.lr, backbone_lr_mult=1.0,
            weight_decay=p.weight_decay, batch_size=p.batch_size, patience=p.patience,
            max_minutes=p.max_minutes, seed=p.seed,
        )  # fmt: skip
        y_val = np.tile(np.arange(4), len(val_idx))
        history, best_epoch = run_epochs(
            model, train_loader, val_loader, y_val, loop, device, progress
        )
        best = max(history, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
        state, head = split_classifier(model)
        digest = hashlib.sha256(save_tensors(state)).hexdigest()
        metrics: dict[str, Any] = {
            "task": "rotation",
            "architecture": p.architecture,
            "rotation_accuracy": best["val_accuracy"],
            "chance": 1 / len(ROTATIONS),
            "validation": "holdout",
            "n_images": len(images),
            "n_train": len(train_idx),
            "n_validation": len(val_idx),
            "history": history,
            "best_epoch": best_epoch,
            "device": device.type,
        }
        progress(1.0, "done")
        return TrainedModel(
            method=self.name,
            backbone=p.architecture,
            backbone_digest=digest,
            preprocessing=cfg,
            classes=list(ROTATIONS),
            head=head,
            metrics=metrics,
            params=p.model_dump(),
            backbone_state=state,
        )
