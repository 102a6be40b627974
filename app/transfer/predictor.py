"""Serving: bounded caches of backbones and heads shared by every model.

A thousand linear-probe models on one backbone cost one network and a thousand small
heads. Models with a finetuned backbone carry their own backbone tensors and are cached
whole, under the model's key.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import torch
from torch import nn

from app.errors import NoRejectDefault
from app.transfer.artifacts import TrainedModel, shared_tensor
from app.transfer.backbones import Backbone, load_backbone
from app.transfer.data import Sample
from app.transfer.export import ExportFormat, export_model
from app.transfer.features import (
    FeatureCache,
    embed_tensors,
    extract_features,
    prepare_backbone,
    warm_up,
)
from app.transfer.finetune_parts import classifier_param_names
from app.transfer.heads import Head
from app.transfer.localize import (
    DEFAULT_FLIP,
    DEFAULT_MASS,
    DEFAULT_SCALES,
    DEFAULT_THRESHOLD,
    Localization,
    localize,
)
from app.transfer.preprocess import decode_image, load_for_model

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """A thread-safe least-recently-used cache; ``get_or_load`` loads a key once."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[K, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._data:
                    return self._data[key]
            value = load()
            with self._lock:
                self._data[key] = value
                self._data.move_to_end(key)
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
                self._loading.pop(key, None)
            return value

    def discard(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)


#: Whose batches these are, for :class:`ImageBudget`'s turns: the API sets the tenant's id
#: for each authenticated request (``app.api.guards.EarlyAuth``); "" everywhere else.
budget_key: ContextVar[str] = ContextVar("budget_key", default="")


class ImageBudget:
    """At most ``limit`` images in inference at once, over every thread (0: no limit).

    Each concurrent batch holds its decoded tensors and the backbone's activations: past a
    core or two, more batches at once buy no throughput, only memory and latency. A batch
    takes as many units as it has images (at most ``limit``, so any batch can run) and the
    others wait their turn: first come first served among the batches of one
    :data:`budget_key`, and keys in turn (the key just served goes to the back), so one
    tenant's many waiting batches do not all pass before another's one. ``on_idle`` runs
    (outside the lock) each time the last batch in inference leaves: the API gives freed
    memory back then."""

    def __init__(self, limit: int, on_idle: Callable[[], None] = lambda: None) -> None:
        if limit < 0:
            raise ValueError("limit must be 0 (no limit) or more")
        self.limit = limit
        self.on_idle = on_idle
        self.in_flight = 0
        self.peak = 0
        self._cond = threading.Condition()
        #: Waiting batches by key; the first key's first batch is next.
        self._waiting: OrderedDict[str, deque[object]] = OrderedDict()

    @property
    def waiting(self) -> int:
        """Batches waiting for their turn."""
        with self._cond:
            return sum(map(len, self._waiting.values()))

    def _is_next(self, ticket: object) -> bool:
        return next(iter(self._waiting.values()))[0] is ticket

    @contextmanager
    def hold(self, images: int) -> Iterator[None]:
        n = max(1, min(images, self.limit)) if self.limit else images
        key, ticket = budget_key.get(), object()
        with self._cond:
            self._waiting.setdefault(key, deque()).append(ticket)
            self._cond.wait_for(
                lambda: (
                    self._is_next(ticket) and (not self.limit or self.in_flight + n <= self.limit)
                )
            )
            queue = self._waiting.pop(key)
            queue.popleft()
            if queue:  # this key's next batch waits behind every other key's first
                self._waiting[key] = queue
            self.in_flight += n
            self.peak = max(self.peak, self.in_flight)
            self._cond.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= n
                idle = self.in_flight == 0
                self._cond.notify_all()
            if idle:
                self.on_idle()


#: Head buffers at least this large are kept once per process when several models carry the
#: same bytes: every zero-shot model holds the backbone's ImageNet classifier (5 MB for
#: efficientnet_lite0) and ImageNet's class-text vectors (1.5 MB), identical across models.
SHARE_MIN_BYTES = 256 * 1024


class SharedTensors:
    """Identical large tensors of different models, held once (weakly: a tensor goes when
    the last model using it is evicted). Serving only: shared tensors are never written."""

    def __init__(self, min_bytes: int = SHARE_MIN_BYTES) -> None:
        self.min_bytes = min_bytes
        self._lock = threading.Lock()
        self._tensors: weakref.WeakValueDictionary[tuple[str, str, tuple[int, ...]], torch.Tensor]
        self._tensors = weakref.WeakValueDictionary()

    def __len__(self) -> int:
        return len(self._tensors)

    def share(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.numel() * tensor.element_size() < self.min_bytes or tensor.requires_grad:
            return tensor
        flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        key = (hashlib.sha256(flat).hexdigest(), str(tensor.dtype), tuple(tensor.shape))
        with self._lock:
            kept = self._tensors.get(key)
            if kept is None or kept.device != tensor.device:
                self._tensors[key] = kept = tensor
        return kept

    def by_digest(self, digest: str, load: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The stored shared tensor of sha256 ``digest`` (:mod:`app.transfer.artifacts`):
        the copy held already, else ``load()``'s."""
        key = (digest, "stored", ())
        with self._lock:
            kept = self._tensors.get(key)
        if kept is None:
            kept = self.share(load())
            with self._lock:
                self._tensors[key] = kept
        return kept

    def share_buffers(self, module: nn.Module) -> None:
        """Point ``module``'s large buffers at the copies other models already hold."""
        for sub in module.modules():
            for name, buf in list(sub._buffers.items()):
                if buf is not None:
                    sub._buffers[name] = self.share(buf)


def model_backbone(
    model: TrainedModel,
    model_key: str,
    *,
    weights_dir: Path | None,
    allow_hub: bool,
    graph_dir: Path | None = None,
) -> Backbone:
    """The network ``model`` runs on, ready for inference: its registry backbone, with the
    model's own finetuned tensors loaded when it has them (all of the network's, or only
    those that differ from the pretrained weights: ``backbone_delta``)."""
    backbone = load_backbone(model.backbone, weights_dir=weights_dir, allow_hub=allow_hub)
    over_pretrained = model.backbone_state is None or model.backbone_delta
    if over_pretrained and backbone.weights_digest != model.backbone_digest:
        raise RuntimeError(f"backbone {model.backbone} weights changed since the model was trained")
    if model.backbone_state is not None:
        loaded = backbone.model.load_state_dict(model.backbone_state, strict=False)
        missing = set(loaded.missing_keys) - classifier_param_names(backbone.model)
        if loaded.unexpected_keys or (missing and not model.backbone_delta):
            raise ValueError(f"finetuned backbone of {model_key} does not fit {model.backbone}")
    return prepare_backbone(backbone, graph_dir)


def reject_threshold(
    metrics: Mapping[str, Any], reject_below: float | Literal["default"] | None
) -> float | None:
    """The rejection threshold asked for; ``"default"`` is the model's ``reject_below``
    (in its ``metrics``)."""
    if reject_below != "default":
        return reject_below
    stored = metrics.get("reject_below")
    if stored is None:
        raise NoRejectDefault(
            "This model has no default rejection threshold (it had no labeled validation "
            "images, or none was classified right); pass reject_below=<score> instead."
        )
    return float(stored)


@dataclass(frozen=True)
class TaskPrediction:
    """A multi-task model's answer for one label set: ``label`` (single-label sets) or the
    ``labels`` scoring at least 0.5 (multi-label sets), with the top-k ``scores``."""

    scores: list[tuple[str, float]]  # top-k, best first
    label: str | None = None
    labels: list[str] | None = None


@dataclass(frozen=True)
class Prediction:
    label: str | None  # None: "none of the above" (top score below the rejection threshold)
    score: float
    scores: list[tuple[str, float]]  # top-k, best first
    negative: bool = False  # the label is a negative ("none of these") class
    tasks: dict[str, TaskPrediction] = field(default_factory=dict)  # other label sets


def task_predictions(
    head: Head, feats: torch.Tensor, top_k: int
) -> list[dict[str, TaskPrediction]]:
    """Per image, the head's predictions for its other tasks (none for single-task heads)."""
    out: list[dict[str, TaskPrediction]] = [{} for _ in range(len(feats))]
    for spec, probs in head.extra_tasks(feats):
        values, indices = probs.topk(min(top_k, len(spec.classes)), dim=-1)
        rows = zip(out, probs >= 0.5, values.tolist(), indices.tolist(), strict=True)
        for answers, chosen, vals, idx in rows:
            scores = [(spec.classes[i], float(v)) for v, i in zip(vals, idx, strict=True)]
            answers[spec.name] = (
                TaskPrediction(scores, labels=[spec.classes[i] for i in chosen.nonzero()[:, 0]])
                if spec.multi_label
                else TaskPrediction(scores, label=scores[0][0])
            )
    return out


class Predictor:
    """Loads artifacts on first use and predicts images with them."""

    def __init__(
        self,
        *,
        max_backbones: int = 4,
        max_heads: int = 1024,
        weights_dir: Path | None = None,
        allow_hub: bool = False,
        max_pixels: int = 50_000_000,
        batch_size: int = 16,
        max_images_in_flight: int = 0,
        graph_dir: Path | None = None,
        on_idle: Callable[[], None] = lambda: None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.budget = ImageBudget(max_images_in_flight, on_idle)
        self.graph_dir = graph_dir
        self.backbones: LRUCache[tuple[str, str], Backbone] = LRUCache(max_backbones)
        self.models: LRUCache[str, TrainedModel] = LRUCache(max_heads)
        self.shared = SharedTensors()
        self.weights_dir = weights_dir
        self.allow_hub = allow_hub
        self.max_pixels = max_pixels

    def _backbone_for(self, model_key: str, model: TrainedModel) -> Backbone:
        if model.backbone_state is not None:
            key = (model.backbone, f"finetuned:{model_key}")
        else:
            key = (model.backbone, model.backbone_digest)
        return self.backbones.get_or_load(
            key,
            lambda: model_backbone(
                model, model_key, weights_dir=self.weights_dir, allow_hub=self.allow_hub,
                graph_dir=self.graph_dir,
            ),
        )  # fmt: skip

    def prewarm(self, name: str) -> Backbone:
        """Load registry backbone ``name`` and build its inference session now (the graph
        from ``graph_dir`` when another process exported it), and run one image through
        it: the first predict of a model on it then pays for neither."""
        backbone = prepare_backbone(
            load_backbone(name, weights_dir=self.weights_dir, allow_hub=self.allow_hub),
            self.graph_dir,
        )
        backbone = self.backbones.get_or_load((name, backbone.weights_digest), lambda: backbone)
        warm_up(backbone, 1)
        return backbone

    def export(self, model_key: str, read: Callable[[str], bytes], fmt: ExportFormat) -> bytes:
        """The model as one ONNX or TorchScript file (see :mod:`app.transfer.export`)."""
        model = self.load(model_key, read)
        return export_model(
            self._backbone_for(model_key, model), model, model_id=model_key, fmt=fmt
        )

    def _batch(self, model: TrainedModel, images: Sequence[bytes]) -> torch.Tensor:
        return torch.stack(
            [load_for_model(b, model.preprocessing, max_pixels=self.max_pixels) for b in images]
        )

    def _chunks(self, n: int) -> range:
        """Start indices of the ``batch_size`` chunks of ``n`` images: decoded tensors and
        activations are held for one chunk at a time, so memory is flat in ``n``."""
        return range(0, n, self.batch_size)

    def localize(
        self,
        model_key: str,
        read: Callable[[str], bytes],
        images: Sequence[bytes],
        labels: Sequence[str | None],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        scales: Sequence[float] = DEFAULT_SCALES,
        flip: bool = DEFAULT_FLIP,
        mass: float | None = DEFAULT_MASS,
    ) -> list[Localization | None]:
        """Where class ``labels[i]`` is in ``images[i]`` (see :mod:`app.transfer.localize`),
        with the model's own (finetuned, where it is) backbone; None for a label the model
        does not have (a rejected prediction, say)."""
        model = self.load(model_key, read)
        wanted = [i for i, label in enumerate(labels) if label in model.classes]
        draft = round(model.preprocessing.side * max(scales))
        out: list[Localization | None] = [None] * len(images)
        for start in self._chunks(len(wanted)):
            chunk = wanted[start : start + self.batch_size]
            backbone = self._backbone_for(model_key, model)
            with self.budget.hold(len(chunk)):
                found = localize(
                    backbone,
                    model.head,
                    [
                        decode_image(images[i], max_pixels=self.max_pixels, draft_size=draft)
                        for i in chunk
                    ],
                    model.classes,
                    [model.classes.index(labels[i]) for i in chunk],
                    preprocessing=model.preprocessing,
                    threshold=threshold,
                    scales=scales,
                    flip=flip,
                    mass=mass,
                )
            for i, loc in zip(chunk, found, strict=True):
                out[i] = loc
        return out

    def pool_scores(
        self,
        model_key: str,
        read: Callable[[str], bytes],
        samples: Sequence[Sample],
        load_bytes: Callable[[Sample], bytes],
        *,
        cache_dir: Path | None,
        labeled_keys: Sequence[str] = (),
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For active learning: features ``(N, D)`` and class probabilities ``(N, C)`` of
        ``samples``, and the cached features ``(M, D)`` of ``labeled_keys`` (those not
        cached are skipped, never computed). Features come from the feature cache
        (``cache_dir``, keyed by sha256 like training's); only uncached images take a
        backbone pass (and are cached). A finetuned backbone's features are not cached."""
        model = self.load(model_key, read)
        backbone = self._backbone_for(model_key, model)
        frozen = model.backbone_state is None
        feats = self._features(backbone, samples, load_bytes, cache_dir if frozen else None)
        with torch.inference_mode():
            probs = model.head(torch.from_numpy(feats)).float().numpy()
        labeled: list[np.ndarray] = []
        if frozen and cache_dir is not None:
            cache = FeatureCache(cache_dir, backbone.cache_key)
            for key in labeled_keys:
                vector = cache.get(key)
                if vector is not None and vector.shape == (backbone.num_features,):
                    labeled.append(vector)
        labeled_arr = np.stack(labeled) if labeled else np.zeros((0, feats.shape[1]), np.float32)
        return feats, probs, labeled_arr

    def _features(
        self,
        backbone: Backbone,
        samples: Sequence[Sample],
        load_bytes: Callable[[Sample], bytes],
        cache_dir: Path | None,
    ) -> np.ndarray:
        """Features ``(N, D)`` of ``samples`` through the feature cache (when ``cache_dir``),
        ``batch_size`` at a time within the predictor's ImageBudget, like predict (cached
        rows cost no pass)."""
        parts = [np.zeros((0, backbone.num_features), np.float32)]
        for start in self._chunks(len(samples)):
            chunk = samples[start : start + self.batch_size]
            with self.budget.hold(len(chunk)):
                part = extract_features(
                    chunk, backbone=backbone, load_bytes=load_bytes, max_pixels=self.max_pixels,
                    batch_size=self.batch_size, cache_dir=cache_dir,
                )  # fmt: skip
                parts.append(part)
        return np.concatenate(parts)

    def pretrained_features(
        self,
        model_key: str,
        read: Callable[[str], bytes],
        samples: Sequence[Sample],
        load_bytes: Callable[[Sample], bytes],
        *,
        cache_dir: Path | None,
    ) -> np.ndarray:
        """Features ``(N, D)`` of ``samples`` from the model's pretrained backbone (its
        registry weights, even when the model finetuned them: one feature space for every
        model on that backbone, the one training caches). Cached rows are read from the
        feature cache; only the others take a backbone pass (and are cached)."""
        model = self.load(model_key, read)
        backbone = self._backbone_for(model_key, replace(model, backbone_state=None))
        return self._features(backbone, samples, load_bytes, cache_dir)

    def load(self, model_key: str, read: Callable[[str], bytes]) -> TrainedModel:
        return self.models.get_or_load(model_key, lambda: self._read_model(read))

    def _read_model(self, read: Callable[[str], bytes]) -> TrainedModel:
        model = TrainedModel.from_files(
            read, lambda digest: self.shared.by_digest(digest, lambda: shared_tensor(read, digest))
        )
        self.shared.share_buffers(model.head)
        return model

    def evict(self, model_key: str) -> None:
        self.models.discard(model_key)

    def predict(
        self,
        model_key: str,
        read: Callable[[str], bytes],
        images: Sequence[bytes],
        *,
        top_k: int = 5,
        reject_below: float | Literal["default"] | None = None,
        negative: Collection[str] = (),
    ) -> list[Prediction]:
        """Class probabilities for each image, top-``k`` best first.

        A top score below ``reject_below`` (``"default"``: the model's own threshold, chosen
        on validation data at training) answers ``label=None``; a label in ``negative``
        is flagged as a negative class. Images are decoded and embedded ``batch_size`` at a
        time, within the predictor's :class:`ImageBudget`."""
        model = self.load(model_key, read)
        threshold = reject_threshold(model.metrics, reject_below)
        backbone = self._backbone_for(model_key, model)
        out: list[Prediction] = []
        for start in self._chunks(len(images)):
            chunk = images[start : start + self.batch_size]
            with self.budget.hold(len(chunk)):
                batch = self._batch(model, chunk)
                out.extend(self._predict_batch(model, backbone, batch, top_k, threshold, negative))
                del batch
        return out

    @staticmethod
    def _predict_batch(
        model: TrainedModel,
        backbone: Backbone,
        batch: torch.Tensor,
        top_k: int,
        threshold: float | None,
        negative: Collection[str],
    ) -> list[Prediction]:
        feats = torch.from_numpy(embed_tensors(backbone, batch))
        with torch.inference_mode():
            probs = model.head(feats)
            tasks = task_predictions(model.head, feats, top_k)
        k = min(top_k, len(model.classes))
        values, indices = probs.topk(k, dim=-1)
        out = []
        for vals, idx, extra in zip(values.tolist(), indices.tolist(), tasks, strict=True):
            scores = [(model.classes[i], float(v)) for v, i in zip(vals, idx, strict=True)]
            label, score = scores[0]
            rejected = threshold is not None and score < threshold
            out.append(
                Prediction(
                    label=None if rejected else label,
                    score=score,
                    scores=scores,
                    negative=not rejected and label in negative,
                    tasks=extra,
                )
            )
        return out
