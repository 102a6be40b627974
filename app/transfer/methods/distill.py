r"""``distill``: a small student network trained on a teacher model's soft outputs.

Knowledge distillation (Hinton, Vinyals & Dean 2015). With teacher class scores :math:`t`
(logits, or log-probabilities for non-linear heads; an ensemble of teachers averages its
probabilities :math:`\bar p` and uses :math:`t = \log \bar p`), student logits :math:`s`,
temperature :math:`T` and mix :math:`\alpha`:

.. math:: L = \alpha\, T^2\, \mathrm{KL}\big(\mathrm{softmax}(t/T) \,\|\,
          \mathrm{softmax}(s/T)\big) + (1 - \alpha)\, \mathrm{CE}(s, y).

The :math:`T^2` keeps the soft term's gradients on the scale of the hard one. Unlabeled
images of the project count: the teacher labels them, and they get the soft term only.

The student is a registered backbone (default: the smallest one with weights here) plus a
linear head first distilled alone on the student's frozen features (``linear_probe_init``),
then trained with finetune's machinery (blocks chosen
by ``trainable``, AdamW, cosine schedule, early stopping on labeled validation images).

Honesty: student and teacher are measured on the same images: the ``test`` split, or else
a stratified holdout of labeled images the student never trains on. The teacher was
normally fit on every non-test image, holdout included, so without a test split its
accuracy there is optimistic: ``teacher.saw_validation`` says so. Beside accuracy, the
metrics give parameters, artifact bytes and single-image predict latency (median, through
:class:`~app.transfer.predictor.Predictor`) of student and teacher.
"""

from __future__ import annotations

import statistics
import time
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from app.errors import InvalidParams, TeacherClassesMismatch
from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import (
    load_backbone,
    parameter_count,
    require_trainable,
    resolve_weights,
    smallest_available,
)
from app.transfer.data import Progress, Sample, TrainingData, no_progress
from app.transfer.evaluation import classification_metrics, stratified_holdout
from app.transfer.features import extract_features
from app.transfer.methods import register_method
from app.transfer.methods.base import MAX_GRID, Method, MethodParams, shared_backbone
from app.transfer.predictor import Predictor, model_backbone
from app.transfer.preprocess import decode_image, eval_transform
from app.transfer.training import (
    ImageDataset,
    Trainable,
    TrainingParams,
    device_for_training,
    predict,
    run_epochs,
    split_classifier,
    train_transform,
)

LATENCY_RUNS = 5


class DistillParams(TrainingParams, MethodParams):
    teacher_model_id: str | Annotated[list[str], Field(min_length=1, max_length=MAX_GRID)] = Field(
        description="A model of this project, or a list of them (an ensemble: probabilities "
        "averaged); all must have the same classes."
    )
    student_backbone: str | None = Field(
        None,
        max_length=200,
        description="Default: the registered backbone with the fewest parameters.",
    )
    temperature: float = Field(4.0, gt=0, le=100, description="Softens both distributions.")
    alpha: float = Field(
        0.7, ge=0, le=1, description="Weight of the soft (teacher) term; 1 - alpha on labels."
    )
    trainable: Trainable = "all"

    @property
    def teacher_ids(self) -> list[str]:
        ids = self.teacher_model_id
        return [ids] if isinstance(ids, str) else list(ids)


def distillation_loss(
    logits: torch.Tensor, hard: torch.Tensor, soft: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """The loss above for a batch: ``logits (B, C)``, labels ``hard (B,)`` (-1: unlabeled,
    soft term only) and teacher scores ``soft (B, C)`` (before the temperature)."""
    log_student = F.log_softmax(logits / temperature, dim=-1)
    target = F.softmax(soft / temperature, dim=-1)
    kl = F.kl_div(log_student, target, reduction="batchmean")
    loss = alpha * temperature**2 * kl
    labeled = hard >= 0
    if alpha < 1 and bool(labeled.any()):
        loss = loss + (1 - alpha) * F.cross_entropy(logits[labeled], hard[labeled])
    return loss


def warm_start_head(
    feats: torch.Tensor, hard: torch.Tensor, soft: torch.Tensor, p: DistillParams, steps: int = 300
) -> torch.nn.Linear:
    """The student's linear head distilled first on its frozen features ``(N, D)`` (the
    same loss, full batch, AdamW): the distillation analogue of linear-probe-then-finetune,
    with logits on the scale the loss expects (a plain probe's can be far larger)."""
    head = torch.nn.Linear(feats.shape[1], soft.shape[1])
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=p.weight_decay)
    for _ in range(steps):
        loss = distillation_loss(head(feats), hard, soft, p.temperature, p.alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head.eval()


class _Targets(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Images with their label (-1 when unlabeled) and the teacher's scores."""

    def __init__(
        self, images: list[Any], labels: np.ndarray, scores: np.ndarray, transform: Any
    ) -> None:
        self.images, self.labels, self.scores, self.transform = images, labels, scores, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tuple[int, torch.Tensor]]:
        return self.transform(self.images[i]), (
            int(self.labels[i]),
            torch.from_numpy(self.scores[i]),
        )


def _footprint(model: TrainedModel, key: str, image: bytes, predictor: Predictor) -> dict[str, Any]:
    """Parameters (network without ImageNet classifier, plus head), artifact bytes and the
    median single-image predict latency of ``model``."""
    files = model.to_files()
    predictor.predict(key, files.__getitem__, [image])  # loads and prepares the backbone
    times = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        predictor.predict(key, files.__getitem__, [image])
        times.append(time.perf_counter() - started)
    head_params = sum(t.numel() for t in model.head.tensors().values())
    return {
        "parameters": parameter_count(model.backbone) + head_params,
        "artifact_bytes": sum(len(v) for v in files.values()),
        "latency_ms": round(1000 * statistics.median(times), 2),
    }


@register_method
class Distill(Method):
    name = "distill"
    summary = "Train a small student from a teacher model's soft outputs (Hinton et al. 2015)."
    Params = DistillParams
    backbone_training = True
    example_params: ClassVar[dict[str, Any]] = {
        "teacher_model_id": "mdl_...",
        "student_backbone": "mobilenetv2_100",
        "temperature": 4.0,
        "alpha": 0.7,
    }

    def check(self, data: TrainingData, params: MethodParams) -> None:
        self._teachers(data, params)  # type: ignore[arg-type]

    def _teachers(self, data: TrainingData, p: DistillParams) -> list[TrainedModel]:
        """Check data, teachers and student backbone; return the teachers."""
        self.check_data(data)
        if data.load_model is None:
            raise InvalidParams("Distillation needs the project's models (no model loader).")
        teachers = [data.load_model(model_id) for model_id in p.teacher_ids]
        classes = teachers[0].classes
        if any(t.classes != classes for t in teachers):
            raise TeacherClassesMismatch("The teachers of an ensemble must have the same classes.")
        unknown = sorted(set(data.class_counts()) - set(classes))
        if unknown:
            raise TeacherClassesMismatch(
                f"The teacher does not know the classes {unknown}; retrain it first.",
                teacher_classes=classes,
            )
        student = self._student(data, p)
        require_trainable(student)
        resolve_weights(student, weights_dir=data.weights_dir, allow_hub=data.allow_hub)
        return teachers

    def model_backbone(self, data: TrainingData, params: MethodParams) -> str:
        return self._student(data, params)  # type: ignore[arg-type]

    @staticmethod
    def _student(data: TrainingData, p: DistillParams) -> str:
        return p.student_backbone or smallest_available(
            weights_dir=data.weights_dir, allow_hub=data.allow_hub
        )

    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        if not isinstance(params, DistillParams):
            raise InvalidParams("distill needs params with `teacher_model_id`.")
        p = params
        progress(0.0, "loading teachers")
        teachers = self._teachers(data, p)
        classes = teachers[0].classes
        labeled = [s for s in data.labeled() if s.label in classes]
        unlabeled = [s for s in data.samples if s.label is None and s.domain == "target"]
        unlabeled = [s for s in unlabeled if s.split != "test"]
        samples: list[Sample] = labeled + unlabeled
        y = np.array([classes.index(s.label) for s in labeled] + [-1] * len(unlabeled))  # type: ignore[arg-type]
        is_test = np.array([s.split == "test" for s in samples])
        labeled_idx = np.flatnonzero(y >= 0)
        if is_test.any():
            protocol = "test-split"
            eval_idx, pool = np.flatnonzero(is_test), labeled_idx[~is_test[labeled_idx]]
        else:
            protocol = "holdout"
            pool, eval_idx = stratified_holdout(labeled_idx, y, p.holdout_fraction, p.seed)
        train_idx, val_idx = stratified_holdout(pool, y, p.holdout_fraction, p.seed + 1)
        train_idx = np.concatenate([train_idx, np.flatnonzero(y < 0)])

        progress(0.01, "teacher outputs")
        probs = np.zeros((len(samples), len(classes)), dtype=np.float32)
        for model_id, teacher in zip(p.teacher_ids, teachers, strict=True):
            network = model_backbone(
                teacher, model_id, weights_dir=data.weights_dir, allow_hub=data.allow_hub
            )
            feats = extract_features(
                samples, backbone=network, load_bytes=data.load_bytes, max_pixels=data.max_pixels,
                batch_size=data.batch_size,
                cache_dir=data.feature_cache_dir if teacher.backbone_state is None else None,
            )  # fmt: skip
            with torch.inference_mode():
                probs += teacher.head(torch.from_numpy(feats)).numpy() / len(teachers)
        teacher_scores = np.log(np.clip(probs, 1e-12, None)).astype(np.float32)

        student_name = self._student(data, p)
        progress(0.03, "student head warm start")
        frozen = shared_backbone(student_name, data.weights_dir, data.allow_hub)
        student_feats = extract_features(
            [samples[i] for i in train_idx], backbone=frozen, load_bytes=data.load_bytes,
            max_pixels=data.max_pixels, batch_size=data.batch_size,
            cache_dir=data.feature_cache_dir,
        )  # fmt: skip
        warm = warm_start_head(
            torch.from_numpy(student_feats), torch.from_numpy(y[train_idx]),
            torch.from_numpy(teacher_scores[train_idx]), p,
        )  # fmt: skip
        device = device_for_training()
        backbone = load_backbone(
            student_name, weights_dir=data.weights_dir, allow_hub=data.allow_hub
        )
        model = backbone.model
        model.reset_classifier(len(classes))  # type: ignore[operator]
        if p.linear_probe_init:
            model.get_classifier().load_state_dict(warm.state_dict())  # type: ignore[operator]
        model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]

        cfg = backbone.preprocessing
        pil = {i: decode_image(data.load_bytes(samples[i]), max_pixels=data.max_pixels, draft_size=cfg.side * 2)
               for i in np.concatenate([train_idx, val_idx, eval_idx]).tolist()}  # fmt: skip

        def loss_fn(logits: torch.Tensor, target: Any) -> torch.Tensor:
            hard, soft = (t.to(logits.device) for t in target)
            return distillation_loss(logits, hard, soft, p.temperature, p.alpha)

        def labels_loader(idx: np.ndarray) -> Any:  # (image, label): what evaluation reads
            ds = ImageDataset([pil[i] for i in idx.tolist()], y[idx], eval_transform(cfg))
            return torch.utils.data.DataLoader(ds, batch_size=p.batch_size)

        train_loader = torch.utils.data.DataLoader(
            _Targets([pil[i] for i in train_idx.tolist()], y[train_idx],
                     teacher_scores[train_idx], train_transform(cfg, p.augment)),
            batch_size=p.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(p.seed),
        )  # fmt: skip
        val_loader = labels_loader(val_idx) if len(val_idx) else None
        history, best_epoch = run_epochs(
            model, train_loader, val_loader, y[val_idx], p, device, progress, loss_fn
        )

        progress(0.96, "evaluating")
        student_probs, _ = predict(model, labels_loader(eval_idx), device)
        y_eval = y[eval_idx]
        student_pred, teacher_pred = student_probs.argmax(1), probs[eval_idx].argmax(1)
        split_info = {
            "validation": protocol,
            "n_train": int((y[train_idx] >= 0).sum()),
            "n_validation": len(eval_idx),
        }
        metrics: dict[str, Any] = {
            **classification_metrics(y_eval, student_pred, classes),
            **split_info,
        }
        teacher_metrics = {**classification_metrics(y_eval, teacher_pred, classes), **split_info}
        metrics["baseline"] = {"name": "teacher", **teacher_metrics}
        state, head = split_classifier(model)
        student = self.trained(
            backbone,
            classes=classes,
            head=head,
            metrics=metrics,
            params={**p.model_dump(), "student_backbone": student_name},
            backbone_state=state,
            preprocessing=cfg,
        )
        progress(0.98, "measuring size and latency")
        predictor = Predictor(weights_dir=data.weights_dir, allow_hub=data.allow_hub)
        image = data.load_bytes(samples[int(eval_idx[0])])
        sizes = [
            _footprint(t, k, image, predictor) for k, t in zip(p.teacher_ids, teachers, strict=True)
        ]
        teacher_footprint = {k: sum(s[k] for s in sizes) for k in sizes[0]}
        metrics.update(
            n_unlabeled=int((y[train_idx] < 0).sum()),
            agreement=float((student_pred == teacher_pred).mean()),
            teacher={
                "model_ids": p.teacher_ids,
                "accuracy": teacher_metrics["accuracy"],
                "macro_f1": teacher_metrics["macro_f1"],
                "saw_validation": protocol != "test-split",
                **teacher_footprint,
            },
            student={"backbone": student_name, **_footprint(student, "student", image, predictor)},
            history=history,
            best_epoch=best_epoch,
            device=device.type,
        )
        progress(1.0, "done")
        return student
