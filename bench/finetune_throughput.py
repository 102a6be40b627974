"""Finetune training images/s: Dovecote's step vs timm's plain training loop, same run.

Dovecote: frozen parts without gradients (and BatchNorm statistics frozen), channels-last,
gradient clipping, AdamW with head/backbone learning rates (``setup_training`` +
``train_epoch``). Plain: the timm model in train mode, NCHW, every parameter requiring
gradients, AdamW over the trainable ones — what a first script would do.

    python -m bench.finetune_throughput [--batches 6] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from app.transfer.backbones import load_backbone
from app.transfer.finetune_parts import set_train_mode, trainable_parameters
from app.transfer.training import (
    TrainingParams,
    device_for_training,
    setup_training,
    train_epoch,
)


def batches(n: int, batch_size: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch_size, 3, size, size, generator=g),
            torch.randint(0, 5, (batch_size,), generator=g),
        )
        for _ in range(n)
    ]


def _sync(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA runs them asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def dovecote(trainable: str, data: list, device: torch.device) -> float:
    model = load_backbone("efficientnet_lite0").model
    model.reset_classifier(5)
    model.to(device, memory_format=torch.channels_last)
    optimizer, moving, frozen_norms = setup_training(
        model, TrainingParams(trainable=trainable, n=2)
    )
    set_train_mode(model, frozen_norms)
    train_epoch(model, data[:1], optimizer, None, device, moving, 1.0)  # warm-up
    _sync(device)
    start = time.perf_counter()
    train_epoch(model, data[1:], optimizer, None, device, moving, 1.0)
    _sync(device)
    return sum(len(t) for _, t in data[1:]) / (time.perf_counter() - start)


def plain(trainable: str, data: list, device: torch.device) -> float:
    model = load_backbone("efficientnet_lite0").model
    model.reset_classifier(5)
    model.to(device).train()
    names = trainable_parameters(model, trainable, 2)
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if n in names], lr=1e-4)

    def step(x: torch.Tensor, t: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x.to(device)), t.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(*data[0])
    _sync(device)  # the warm-up step's kernels are not timed
    start = time.perf_counter()
    for x, t in data[1:]:
        step(x, t)
    _sync(device)
    return sum(len(t) for _, t in data[1:]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    device = device_for_training()
    data = batches(args.batches + 1, args.batch_size, 224)
    amp = "bf16 autocast (dovecote), fp32 (plain)" if device.type == "cuda" else "off (CPU)"
    print(
        f"device={device.type} threads={torch.get_num_threads()} batch={args.batch_size} "
        f"batches={args.batches} backbone=efficientnet_lite0 224px amp={amp}"
    )
    # The first training steps of a process also build the kernels every later run reuses;
    # without this untimed pass the first row would pay for them.
    dovecote("all", data[:3], device)
    print(f"{'trainable':<15}{'dovecote img/s':>16}{'plain timm img/s':>18}{'ratio':>8}")
    for trainable in ("head", "last_n_blocks", "all"):
        ours, theirs = dovecote(trainable, data, device), plain(trainable, data, device)
        print(f"{trainable:<15}{ours:>16.1f}{theirs:>18.1f}{ours / theirs:>8.2f}")


if __name__ == "__main__":
    main()
