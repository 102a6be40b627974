"""What a training method receives: the project's images with labels, domains and splits."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from app.transfer.artifacts import TrainedModel

DOMAINS = ("target", "source")
SPLITS = ("auto", "train", "test")


@dataclass(frozen=True)
class Sample:
    """One image. ``key`` is its content hash (sha256 hex): the feature-cache key.
    ``labels`` holds its labels in the project's other label sets (``{"is_pigeon":
    ("yes",), "tags": ("bird", "railing")}``); a set it is not labeled in is absent."""

    key: str
    label: str | None = None
    domain: str = "target"
    split: str = "auto"
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ClassInfo:
    """A class the project declares, whether or not it has images: its ``name``, an
    optional ``description`` and ``attributes`` vector (zero-shot methods use them), and
    ``negative`` for a "none of these" class such as "empty terrace"."""

    name: str
    description: str = ""
    attributes: Mapping[str, float] = field(default_factory=dict)
    negative: bool = False


@dataclass(frozen=True)
class LabeledSet:
    """``samples[i]`` has class ``classes[y[i]]``; ``is_test[i]`` marks the test split."""

    classes: list[str]
    samples: list[Sample]
    y: np.ndarray
    is_test: np.ndarray


class Progress(Protocol):
    """Reports ``fraction`` (0..1) and ``stage``, plus an optional ``record`` for the job's
    history (an epoch's losses, say). Raises :class:`~app.errors.JobCancelled` when the
    job was cancelled, so methods call it between steps."""

    def __call__(
        self, fraction: float, stage: str, record: dict[str, Any] | None = None
    ) -> None: ...


def no_progress(fraction: float, stage: str, record: dict[str, Any] | None = None) -> None:
    """A :class:`Progress` that reports nothing and never cancels."""


def sub_progress(
    progress: Progress,
    start: float,
    end: float,
    prefix: str = "",
    *,
    records: bool = True,
    tag: dict[str, Any] | None = None,
) -> Progress:
    """``progress`` for one step that spans ``[start, end]`` of the whole job: fraction
    ``f`` of the step reports ``start + (end - start) f``, stages prefixed by ``prefix``;
    the step's history records are passed on only when ``records``. With ``tag`` (one of
    several runs: ``{"fold": 2}``, say) they start with its items and lose their
    ``eta_seconds``, which is the run's own, not the job's."""

    def report(fraction: float, stage: str, record: dict[str, Any] | None = None) -> None:
        if record is not None and tag is not None:
            record = tag | {k: v for k, v in record.items() if k != "eta_seconds"}
        progress(start + (end - start) * fraction, prefix + stage, record if records else None)

    return report


@dataclass
class TrainingData:
    """Samples plus the way to read their bytes, the declared classes, and the shared
    extraction settings.

    ``load_bytes(sample)`` returns the stored image bytes; features are computed through
    :func:`app.transfer.features.extract_features`, cached under ``feature_cache_dir``.
    ``classes`` are the project's declared classes (labels of images included), in the
    project's order; methods that learn from images alone may ignore them.
    ``load_model(model_id)`` returns a trained model of the same project (a distillation
    teacher, say), raising :class:`~app.errors.TeacherNotInProject` for any other id.
    ``label_sets`` names the project's other label sets, each mapped to whether it is
    multi-label (tags) rather than one label per image.
    """

    samples: list[Sample]
    load_bytes: Callable[[Sample], bytes]
    classes: list[ClassInfo] = field(default_factory=list)
    backbone: str = "efficientnet_lite0"
    feature_cache_dir: Path | None = None
    shared_cache_dir: Path | None = None  # the installation's, shared by every data dir
    weights_dir: Path | None = None
    allow_hub: bool = False
    batch_size: int = 32
    max_pixels: int = 50_000_000
    seed: int = 0
    load_model: Callable[[str], TrainedModel] | None = None
    label_sets: Mapping[str, bool] = field(default_factory=dict)

    @property
    def text_cache_dirs(self) -> list[Path]:
        """Where prepared text embeddings are looked for, the installation's cache first."""
        return [d for d in (self.shared_cache_dir, self.feature_cache_dir) if d is not None]

    @classmethod
    def from_arrays(
        cls,
        images: Sequence[np.ndarray],
        labels: Sequence[str | None],
        splits: Sequence[str] | None = None,
        **kwargs: object,
    ) -> TrainingData:
        """Build from in-memory ``uint8`` arrays (H, W[, 3]) — the notebook entry point."""
        from PIL import Image

        blobs: dict[str, bytes] = {}
        samples = []
        for i, (array, label) in enumerate(zip(images, labels, strict=True)):
            buf = io.BytesIO()
            Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
            data = buf.getvalue()
            key = hashlib.sha256(data).hexdigest()
            blobs[key] = data
            split = splits[i] if splits is not None else "auto"
            samples.append(Sample(key=key, label=label, split=split))
        return cls(samples=samples, load_bytes=lambda s: blobs[s.key], **kwargs)  # type: ignore[arg-type]

    def labeled(self, *, domain: str = "target") -> list[Sample]:
        return [s for s in self.samples if s.label is not None and s.domain == domain]

    def labeled_set(self, *, domain: str = "target") -> LabeledSet:
        """The labeled images of the training classes as arrays (test split included)."""
        classes = sorted(self.class_counts(domain=domain))
        samples = [s for s in self.labeled(domain=domain) if s.label in classes]
        return LabeledSet(
            classes=classes,
            samples=samples,
            y=np.array([classes.index(s.label) for s in samples], dtype=np.int64),  # type: ignore[arg-type]
            is_test=np.array([s.split == "test" for s in samples], dtype=bool),
        )

    def class_counts(self, *, domain: str = "target") -> Counter[str]:
        """Labeled images per class among the training (non-test) samples."""
        return Counter(s.label for s in self.labeled(domain=domain) if s.split != "test")  # type: ignore[misc]
