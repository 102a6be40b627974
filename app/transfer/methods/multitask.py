r"""``multitask``: one shared feature map, one head per label set (hard parameter sharing).

The lecture's "Situation 3" (Caruana 1997; Ruder 2017). Frozen pretrained features
:math:`x` (the feature cache), standardised as :math:`z = (x - \mu) / \sigma`, feed one shared
trainable layer :math:`h = \mathrm{relu}(W_s z + b_s)` (dropout while training) and, per task
:math:`t`, logits :math:`z_t = W_t h + b_t`. Task 0 is the images' ``label``; the others are
the project's label sets. With :math:`M_t` the images labeled in task :math:`t`,

.. math:: L = \sum_t \frac{1}{|M_t|} \sum_{i \in M_t} \ell_t(z_t(x_i), y_{ti})

where :math:`\ell_t` is the cross-entropy of :math:`\mathrm{softmax}(z_t)` for a single-label
set and the binary cross-entropy of :math:`\sigma(z_t)` per tag for a multi-label one;
full-batch AdamW. The standardisation is folded into the served layer:
:math:`W_s' = W_s / \sigma`, :math:`b_s' = b_s - W_s' \mu`.

Baseline: every task alone, as a linear probe on the same features (one-vs-rest per tag),
under the same protocol and folds. A task whose shared-model score (accuracy; micro-F1 for
multi-label) is below its single model's is flagged ``negative_transfer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from app.errors import LabelSetTooSmall, ProjectHasNoLabelSets, UnknownLabelSet
from app.transfer.artifacts import TrainedModel
from app.transfer.data import LabeledSet, Progress, TrainingData, no_progress, sub_progress
from app.transfer.evaluation import (
    classification_metrics,
    make_protocol,
    multilabel_metrics,
    reject_threshold,
)
from app.transfer.heads import MultiTaskHead, TaskSpec
from app.transfer.methods import get_method, register_method
from app.transfer.methods.base import MAX_GRID, Method, MethodParams, frozen_features

PRIMARY = "label"  # the task of the images' own label
THRESHOLD = 0.5  # a tag is predicted when sigma(z) >= 0.5


class MultiTaskParams(MethodParams):
    tasks: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_GRID,
        description="Label sets learnt beside the images' `label` (default: all the project has).",
    )
    hidden: int = Field(256, ge=8, le=4096, description="Width H of the shared layer.")
    steps: int = Field(300, ge=1, le=10_000, description="Full-batch AdamW steps.")
    lr: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(1e-2, ge=0, le=1)
    dropout: float = Field(0.2, ge=0, lt=1)


@dataclass(frozen=True)
class Task:
    """A task over the labeled rows: 0/1 ``targets (N, C)`` and the ``mask (N,)`` of rows
    labeled in it."""

    spec: TaskSpec
    targets: np.ndarray
    mask: np.ndarray

    def score(self, metrics: Mapping[str, Any]) -> float:
        return float(metrics["micro_f1" if self.spec.multi_label else "accuracy"])

    def metrics(self, targets: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        if self.spec.multi_label:
            return multilabel_metrics(targets, probs >= THRESHOLD, self.spec.classes)
        return classification_metrics(
            targets.argmax(axis=1), probs.argmax(axis=1), self.spec.classes
        )


def build_tasks(
    labeled: LabeledSet, label_sets: Mapping[str, bool], names: list[str]
) -> list[Task]:
    """The primary task, then one task per label set in ``names``, over ``labeled``'s rows."""
    n = len(labeled.samples)
    tasks = [
        Task(
            TaskSpec(PRIMARY, labeled.classes, False),
            np.eye(len(labeled.classes), dtype=np.float32)[labeled.y],
            np.ones(n, dtype=bool),
        )
    ]
    for name in names:
        values = [s.labels.get(name, ()) for s in labeled.samples]
        classes = sorted({v for vs in values for v in vs})
        targets = np.array([[c in vs for c in classes] for vs in values], dtype=np.float32)
        mask = np.array([bool(vs) for vs in values], dtype=bool)
        tasks.append(Task(TaskSpec(name, classes, bool(label_sets[name])), targets, mask))
    return tasks


def train_head(
    X: np.ndarray, tasks: list[Task], rows: np.ndarray, params: MultiTaskParams, seed: int
) -> MultiTaskHead:
    """Fit the shared layer and every task's output on ``X[rows]`` (see the module doc)."""
    mu, sigma = X[rows].mean(axis=0), X[rows].std(axis=0) + 1e-6
    Z = torch.from_numpy(((X[rows] - mu) / sigma).astype(np.float32))
    torch.manual_seed(seed)
    shared = nn.Linear(X.shape[1], params.hidden)
    outputs = [nn.Linear(params.hidden, t.targets.shape[1]) for t in tasks]
    layers = nn.ModuleList([shared, *outputs])
    opt = torch.optim.AdamW(layers.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    targets = [torch.from_numpy(t.targets[rows]) for t in tasks]
    masks = [torch.from_numpy(t.mask[rows]) for t in tasks]
    layers.train()
    for _ in range(params.steps):
        h = F.dropout(shared(Z).relu(), params.dropout, training=True)
        loss = torch.zeros(())
        for task, out, y, m in zip(tasks, outputs, targets, masks, strict=True):
            if m.any():
                z = out(h[m])
                loss = loss + (
                    F.binary_cross_entropy_with_logits(z, y[m])
                    if task.spec.multi_label
                    else F.cross_entropy(z, y[m])
                )
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    with torch.no_grad():
        scale = torch.from_numpy(sigma.astype(np.float32))
        shared.weight.div_(scale)
        shared.bias.sub_(shared.weight @ torch.from_numpy(mu.astype(np.float32)))
    return MultiTaskHead(shared, outputs, [t.spec for t in tasks[1:]]).eval()  # type: ignore[return-value]


def probe_predict(
    X_train: np.ndarray, targets: np.ndarray, X_eval: np.ndarray, multi_label: bool
) -> np.ndarray:
    """The single-task baseline: a linear probe on this task alone (one binary probe per
    tag when ``multi_label``); probabilities ``(n_eval, C)``, a class or tag value never
    seen in ``targets`` scoring 0 (or its constant rate)."""
    out = np.zeros((len(X_eval), targets.shape[1]), dtype=np.float32)
    if multi_label:
        for j in range(targets.shape[1]):
            binary = np.eye(2, dtype=np.float32)[targets[:, j].astype(int)]
            out[:, j] = probe_predict(X_train, binary, X_eval, False)[:, 1]
        return out
    y = targets.argmax(axis=1)
    present = np.unique(y)
    if len(present) == 1:
        out[:, present[0]] = 1.0
        return out
    probe = get_method("linear_probe")
    head = probe.fit_head(X_train, np.searchsorted(present, y), len(present), probe.Params())  # type: ignore[attr-defined]
    with torch.inference_mode():
        out[:, present] = head(torch.from_numpy(X_eval)).numpy()
    return out


@register_method
class MultiTask(Method):
    name = "multitask"
    summary = (
        "One shared layer on frozen features, one head per label set; per-task metrics "
        "against each task's own linear probe (negative transfer flagged)."
    )
    Params = MultiTaskParams
    example_params: ClassVar[dict[str, Any]] = {"tasks": ["is_pigeon", "tags"], "steps": 300}

    def task_names(self, data: TrainingData, params: MultiTaskParams) -> list[str]:
        if not data.label_sets:
            raise ProjectHasNoLabelSets(
                "Method 'multitask' needs at least one label set besides `label`; upload "
                'images with `labels`, e.g. {"is_pigeon": "yes"}.'
            )
        names = params.tasks if params.tasks is not None else sorted(data.label_sets)
        unknown = sorted(set(names) - set(data.label_sets))
        if unknown:
            raise UnknownLabelSet(
                f"Unknown label set(s) {unknown}; the project has {sorted(data.label_sets)}.",
                label_sets=sorted(data.label_sets),
            )
        return list(dict.fromkeys(names))

    def tasks(self, data: TrainingData, params: MultiTaskParams) -> tuple[LabeledSet, list[Task]]:
        """The labeled rows and their tasks; refuses a task too small to learn or measure."""
        labeled = self.labeled_set(data)
        tasks = build_tasks(labeled, data.label_sets, self.task_names(data, params))
        train = ~labeled.is_test
        for task in tasks[1:]:
            rows = train & task.mask
            positives = task.targets[rows].sum(axis=0)
            if rows.sum() < 2 or (positives > 0).sum() < (1 if task.spec.multi_label else 2):
                raise LabelSetTooSmall(
                    f"Label set {task.spec.name!r} has too few labeled training images "
                    f"({int(rows.sum())}, values {dict(zip(task.spec.classes, positives.astype(int).tolist(), strict=True))}).",
                    label_set=task.spec.name,
                )
        return labeled, tasks

    def check(self, data: TrainingData, params: MethodParams) -> None:
        self.tasks(data, params)  # type: ignore[arg-type]

    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        params = params if isinstance(params, MultiTaskParams) else MultiTaskParams()
        labeled, tasks = self.tasks(data, params)
        backbone, X = frozen_features(data, labeled.samples, sub_progress(progress, 0.0, 0.6))
        protocol = make_protocol(labeled.y, labeled.is_test, seed=data.seed)
        ev = protocol.eval_idx
        joint = [np.zeros((len(ev), t.targets.shape[1]), np.float32) for t in tasks]
        single = [np.zeros_like(p) for p in joint]
        at = 0
        for k, (tr, e) in enumerate(protocol.folds):
            progress(0.6 + 0.35 * k / len(protocol.folds), "validating")
            head = train_head(X, tasks, tr, params, data.seed)
            with torch.inference_mode():
                logits = head.task_logits(torch.from_numpy(X[e]))
            for t, task in enumerate(tasks):
                z = logits[t]
                joint[t][at : at + len(e)] = (z.sigmoid() if task.spec.multi_label else z.softmax(-1)).numpy()  # fmt: skip
                m = tr[task.mask[tr]]
                single[t][at : at + len(e)] = probe_predict(
                    X[m], task.targets[m], X[e], task.spec.multi_label
                )
            at += len(e)
        per_task = {}
        for t, task in enumerate(tasks):
            m = task.mask[ev]
            truth = task.targets[ev][m]
            mine, alone = task.metrics(truth, joint[t][m]), task.metrics(truth, single[t][m])
            per_task[task.spec.name] = {
                "multi_label": task.spec.multi_label,
                "classes": task.spec.classes,
                "n_validation": int(m.sum()),
                **mine,
                "baseline": {"name": "single_task_linear_probe", **alone},
                "negative_transfer": task.score(mine) < task.score(alone),
            }
        skip = {"multi_label", "classes", "negative_transfer"}
        metrics: dict[str, Any] = {
            **{k: v for k, v in per_task[PRIMARY].items() if k not in skip},
            "validation": protocol.name,
            "n_train": protocol.n_train,
            "n_validation": len(ev),
            "reject_below": reject_threshold(joint[0], labeled.y[ev]),
            "tasks": per_task,
        }
        if protocol.name == "k-fold":
            metrics["folds"] = len(protocol.folds)
        progress(0.95, "fitting final model")
        head = train_head(X, tasks, np.flatnonzero(~labeled.is_test), params, data.seed)
        progress(1.0, "done")
        return self.trained(
            backbone, classes=labeled.classes, head=head, metrics=metrics, params=params
        )
