"""Self-training: pseudo-label the confident target images and refit, a few rounds.

Start from the source classifier :math:`f_0`. In round :math:`k`, the target images with
:math:`\\max_c f_{k-1}(x)_c \\ge \\tau` get the pseudo-label :math:`\\arg\\max_c f_{k-1}(x)_c`,
and :math:`f_k` is the linear classifier fit on the source plus those pseudo-labeled
images (Lee, 2013, "Pseudo-Label"; the confidence threshold :math:`\\tau` as in Zou et al.,
2018). Stops early when the pseudo-labeled set no longer changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from app.transfer.domain.base import Adapted, Task, fit_linear


def self_training(
    task: Task, config: dict[str, Any], seed: int, tick: Callable[[], None]
) -> Adapted:
    Xs, Xt, n_classes = task.source_feats, task.target_feats, task.n_classes
    head = fit_linear(Xs, task.y, n_classes, config["C"])
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for _ in range(config["rounds"]):
        tick()
        with torch.inference_mode():
            probs = head(torch.from_numpy(Xt)).numpy()
        keep = probs.max(axis=1) >= config["threshold"]
        pseudo = probs.argmax(axis=1)[keep]
        if (
            previous is not None
            and np.array_equal(previous[0], keep)
            and np.array_equal(previous[1], pseudo)
        ):
            break
        previous = keep, pseudo
        head = fit_linear(
            np.concatenate([Xs, Xt[keep]]), np.concatenate([task.y, pseudo]), n_classes,
            config["C"],
        )  # fmt: skip
    return Adapted(head, lambda: (Xs, Xt))
