"""DANN: domain-adversarial training through a gradient reversal layer.

Ganin & Lempitsky, 2015, "Unsupervised Domain Adaptation by Backpropagation"; the module
split follows tllib. Features :math:`f` (standardised) pass a bottleneck
:math:`z = \\mathrm{relu}(W_1 f + b_1)`; the label classifier :math:`G_y` reads :math:`z`, and
the domain discriminator :math:`G_d` reads :math:`R_\\lambda(z)`, where the gradient
reversal layer :math:`R_\\lambda` is the identity forward and multiplies gradients by
:math:`-\\lambda` backward. One loss, minimised by every part:

.. math:: \\mathcal L = \\frac1{n_s}\\sum_{i \\in S} \\mathrm{CE}(G_y(z_i), y_i)
          + \\frac1{n_s + n_t}\\sum_{i \\in S \\cup T} \\mathrm{BCE}(G_d(R_\\lambda(z_i)), d_i)

so the discriminator learns to tell the domains apart while the bottleneck (and the
backbone, when it trains) learns to make them indistinguishable. The usual schedules, with
training progress :math:`p \\in [0, 1]`: :math:`\\lambda_p = \\lambda\\,(2 / (1 + e^{-10 p}) - 1)`
(``tradeoff`` :math:`\\lambda`) and the learning rate :math:`\\eta_p = \\eta / (1 + 10 p)^{0.75}`.

By default the backbone stays frozen and DANN trains on the cached pretrained features
through the trainable bottleneck (tllib's "bottleneck"): an epoch costs milliseconds on a
CPU instead of minutes. ``finetune_blocks: n > 0`` also trains the backbone's last ``n``
blocks on the images (block freezing and learning rates as in ``finetune``). The served
head is the bottleneck and classifier (:class:`~app.transfer.heads.MLPHead`), with the
standardisation folded into :math:`W_1`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.transfer.domain.base import Adapted, Task
from app.transfer.finetune_parts import set_train_mode
from app.transfer.heads import MLPHead
from app.transfer.training import TrainingParams, device_for_training, setup_training


class GradientReverse(torch.autograd.Function):
    """:math:`R_\\lambda(x) = x` forward; :math:`\\partial R_\\lambda / \\partial x = -\\lambda I` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def grl_schedule(progress: float) -> float:
    """:math:`\\lambda_p = 2 / (1 + e^{-10 p}) - 1`: 0 at the start, ~1 at the end."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class DomainDiscriminator(nn.Sequential):
    """:math:`G_d`: bottleneck features ``(N, H)`` -> domain logit ``(N,)`` (source = 1)."""

    def __init__(self, width: int) -> None:
        super().__init__(
            nn.Linear(width, width), nn.ReLU(), nn.Dropout(0.5), nn.Linear(width, 1), nn.Flatten(0)
        )


def _pooled(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return network.forward_head(network.forward_features(x), pre_logits=True)  # type: ignore[operator]


def dann(task: Task, config: dict[str, Any], seed: int, tick: Callable[[], None]) -> Adapted:
    pool, source, target = task.pool, task.source, task.target
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    both = pool.feats[np.concatenate([source, target])]
    mu = torch.from_numpy(both.mean(axis=0))
    sigma = torch.from_numpy(both.std(axis=0) + 1e-6)
    width, lr, b = config["hidden"], config["lr"], config["batch_size"]
    bottleneck = nn.Sequential(nn.Linear(both.shape[1], width), nn.ReLU(), nn.Dropout(0.5))
    classifier, discriminator = nn.Linear(width, task.n_classes), DomainDiscriminator(width)
    parts = nn.ModuleList([bottleneck, classifier, discriminator])

    network: nn.Module | None = None
    if config["finetune_blocks"]:
        assert pool.load_network is not None and pool.images is not None
        device = device_for_training()
        network = pool.load_network()
        network.reset_classifier(0)  # type: ignore[operator]
        network.to(device)
        optimizer, _, frozen_norms = setup_training(
            network,
            TrainingParams(
                trainable="last_n_blocks", n=config["finetune_blocks"], lr=lr,
                backbone_lr_mult=config["backbone_lr_mult"], weight_decay=config["weight_decay"],
            ),
        )  # fmt: skip
        optimizer.add_param_group({"params": list(parts.parameters()), "lr": lr})
        images = pool.images

        def embed(rows: np.ndarray) -> torch.Tensor:
            return _pooled(network, images(rows).to(device)).float()  # type: ignore[arg-type]
    else:
        device = torch.device("cpu")
        optimizer = torch.optim.AdamW(
            parts.parameters(), lr=lr, weight_decay=config["weight_decay"]
        )
        feats = torch.from_numpy(pool.feats)

        def embed(rows: np.ndarray) -> torch.Tensor:
            return feats[rows]

    parts.to(device)
    mu, sigma = mu.to(device), sigma.to(device)
    steps = config["epochs"] * math.ceil(max(len(source), len(target)) / b)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (1 + 10 * step / steps) ** -0.75
    )
    y = torch.from_numpy(task.y).to(device)
    domain = torch.cat([torch.ones(b), torch.zeros(b)]).to(device)
    for step in range(steps):
        tick()
        if network is not None:
            set_train_mode(network, frozen_norms)
        parts.train()
        i = torch.randint(len(source), (b,), generator=g).numpy()
        j = torch.randint(len(target), (b,), generator=g).numpy()
        z = bottleneck((embed(np.concatenate([source[i], target[j]])) - mu) / sigma)
        coeff = config["tradeoff"] * grl_schedule(step / steps)
        loss = F.cross_entropy(classifier(z[:b]), y[i]) + F.binary_cross_entropy_with_logits(
            discriminator(GradientReverse.apply(z, coeff)), domain
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    hidden = bottleneck[0]
    w1 = hidden.weight.detach().cpu() / sigma.cpu()
    head = MLPHead(
        w1, hidden.bias.detach().cpu() - w1 @ mu.cpu(),
        classifier.weight.detach().cpu(), classifier.bias.detach().cpu(),
    ).eval()  # fmt: skip
    if network is not None:
        network.eval()
    adapted = Adapted(head, lambda: (np.empty(0), np.empty(0)), network=network)

    def aligned() -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            return tuple(  # type: ignore[return-value]
                head.embed(torch.from_numpy(adapted.features(pool, rows))).numpy()
                for rows in (source, target)
            )

    adapted.aligned = aligned
    return adapted
