"""Batched feature extraction with a content-addressed cache.

Features of an image depend only on its bytes, the backbone weights and the preprocessing,
so they are cached under ``<cache_dir>/<backbone.cache_key>/<sha[:2]>/<sha>.npy``:
retraining after adding 10 images computes features for those 10 only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from app.transfer.backbones import Backbone
from app.transfer.data import Progress, Sample, no_progress
from app.transfer.preprocess import load_for_model


class FeatureCache:
    """A folder of ``.npy`` feature vectors (``allow_pickle=False``), one per image."""

    def __init__(self, root: Path, backbone_key: str) -> None:
        self.dir = root / backbone_key

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        try:
            return np.load(self._path(key), allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            return None

    def put(self, key: str, vector: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: readers never see half a file, concurrent writers agree.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, vector.astype(np.float32), allow_pickle=False)
        os.replace(tmp, path)


_decode_pool = ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2)))


@torch.inference_mode()
def embed_tensors(backbone: Backbone, batch: torch.Tensor) -> np.ndarray:
    """Preprocessed ``(N, 3, H, W)`` -> features ``(N, D)`` float32, channels-last."""
    out = backbone.embed(batch.contiguous(memory_format=torch.channels_last))
    return out.float().numpy()


def prepare_backbone(backbone: Backbone) -> Backbone:
    """Put a backbone into its fastest inference layout (channels-last)."""
    backbone.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return backbone


def extract_features(
    samples: Sequence[Sample],
    *,
    backbone: Backbone,
    load_bytes: Callable[[Sample], bytes],
    max_pixels: int,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    progress: Progress = no_progress,
) -> np.ndarray:
    """Features of ``samples`` in order, shape ``(len(samples), D)``.

    Cached vectors are read back; the rest are decoded in a thread pool (overlapping the
    previous batch's forward pass) and embedded in batches under ``torch.inference_mode``.
    ``progress`` gets the fraction of images done.
    """
    cache = FeatureCache(cache_dir, backbone.cache_key) if cache_dir is not None else None
    out = np.zeros((len(samples), backbone.num_features), dtype=np.float32)
    todo: list[int] = []
    for i, sample in enumerate(samples):
        vector = cache.get(sample.key) if cache is not None else None
        if vector is not None and vector.shape == (backbone.num_features,):
            out[i] = vector
        else:
            todo.append(i)
    done = len(samples) - len(todo)
    progress(done / max(1, len(samples)), "extracting features")

    def decode(idx: list[int]) -> torch.Tensor:
        return torch.stack(
            [
                load_for_model(
                    load_bytes(samples[i]), backbone.preprocessing, max_pixels=max_pixels
                )
                for i in idx
            ]
        )

    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    pending = _decode_pool.submit(decode, batches[0]) if batches else None
    for n, idx in enumerate(batches):
        assert pending is not None
        batch = pending.result()
        pending = _decode_pool.submit(decode, batches[n + 1]) if n + 1 < len(batches) else None
        feats = embed_tensors(backbone, batch)
        for j, i in enumerate(idx):
            out[i] = feats[j]
            if cache is not None:
                cache.put(samples[i].key, feats[j])
        done += len(idx)
        progress(done / len(samples), "extracting features")
    return out
