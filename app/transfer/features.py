"""Batched feature extraction with a content-addressed cache.

Features of an image depend only on its bytes, the backbone weights and the preprocessing,
so they are cached under ``<cache_dir>/<backbone.cache_key>/<sha[:2]>/<sha>.npy``:
retraining after adding 10 images computes features for those 10 only.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from app.transfer.backbones import Backbone
from app.transfer.data import Progress, Sample, no_progress
from app.transfer.export import OPSET, to_onnx
from app.transfer.preprocess import load_for_model

log = logging.getLogger(__name__)


class FeatureCache:
    """A folder of ``.npy`` feature vectors (``allow_pickle=False``), one per image."""

    def __init__(self, root: Path, backbone_key: str) -> None:
        self.dir = root / backbone_key

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def has(self, key: str) -> bool:
        return self._path(key).is_file()

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

#: Largest |difference| tolerated between the ONNX Runtime graph and the eager model;
#: measured ~1e-5 on real photos with efficientnet_lite0 (``python -m bench.feature_extraction``).
_TOLERANCE = 1e-4


@dataclass(frozen=True)
class _Compiled:
    """``Backbone.embed`` as an ONNX Runtime session, and the state it was built from."""

    session: Any  # onnxruntime.InferenceSession
    input_shape: tuple[int, ...]  # (C, H, W) it was exported and checked at
    version: int  # _weights_version of the eager model when exported


# Keyed by the eager model (weakly: dropping a backbone drops its compiled copy, which
# holds no reference back to it). Module identity is the key: Backbone is unhashable.
_compiled: weakref.WeakKeyDictionary[nn.Module, _Compiled] = weakref.WeakKeyDictionary()


class _Embed(nn.Module):
    """``backbone.embed`` as a module: what the ONNX exporter needs."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.model = backbone.model
        self._embed = backbone.embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed(x)


def _weights_version(model: nn.Module) -> int:
    """Changes whenever any parameter or buffer is modified in place (``load_state_dict``,
    an optimiser step): a compiled copy built before that is stale."""
    return sum(t._version for t in (*model.parameters(), *model.buffers()))


#: Bump when what :class:`_Embed` exports changes: cached graphs of older formats are ignored.
GRAPH_FORMAT = 1
#: Where under a feature-cache folder the exported inference graphs live.
GRAPH_SUBDIR = "onnx"


def graph_dir_in(feature_cache_dir: Path | None) -> Path | None:
    """The inference-graph cache that goes with a feature cache folder."""
    return feature_cache_dir / GRAPH_SUBDIR if feature_cache_dir is not None else None


def graph_key(backbone: Backbone, shape: tuple[int, ...]) -> str:
    """What an exported graph depends on: the network (name, class), a digest of its actual
    weights (so a finetuned copy never reuses its base's graph), the input shape and the
    export settings (opset, exporter, torch version, :data:`GRAPH_FORMAT`)."""
    digest = hashlib.sha256()
    for name, tensor in backbone.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    settings = (backbone.name, type(backbone.model).__name__, shape, OPSET, "torchscript",
                torch.__version__, GRAPH_FORMAT)  # fmt: skip
    extra = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
    return f"{backbone.name}-{digest.hexdigest()[:24]}-{extra}"


def _read_graph(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see
    half a file, concurrent writers agree. Raises ``OSError``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_graph(path: Path, graph: bytes) -> None:
    try:
        write_atomically(path, graph)
    except OSError:
        log.warning("cannot cache the inference graph at %s", path, exc_info=True)


def _session(graph: bytes, *, keep_memory: bool) -> Any:
    """An ONNX Runtime session on ``graph``; ``keep_memory``: see :func:`prepare_backbone`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = keep_memory
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _compile(
    backbone: Backbone, graph_dir: Path | None = None, *, keep_memory: bool = False
) -> _Compiled | None:
    """Export ``embed`` to ONNX and open it in ONNX Runtime; None (eager is used) if
    anything is off.

    ONNX Runtime's CPU kernels (BatchNorm folded into the convolutions, fused
    activations, no Python per layer, GIL released) run efficientnet-lite ~1.8x faster
    than the eager model on a 2-core CPU, for ~0.6 s of export (bench/README.md). With
    ``graph_dir`` the exported graph is kept there under :func:`graph_key` and reused by
    every process that prepares the same weights. The session is checked against eager on
    a fixed random batch and refused beyond ``_TOLERANCE`` (a cached graph that fails is
    exported again). CPU only: a backbone on an accelerator stays eager.
    """
    model = backbone.model
    if model.training or any(p.device.type != "cpu" for p in model.parameters()):
        return None
    shape = tuple(backbone.preprocessing.input_size)
    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    path = graph_dir / f"{graph_key(backbone, shape)}.onnx" if graph_dir is not None else None
    try:
        with torch.no_grad():
            want = backbone.embed(example).float().numpy()
        cached = _read_graph(path) if path is not None else None
        if cached is not None:
            try:
                session = _session(cached, keep_memory=keep_memory)
                diff = float(np.abs(session.run(None, {"x": example.numpy()})[0] - want).max())
                if diff <= _TOLERANCE:
                    return _Compiled(session, shape, _weights_version(model))
            except Exception:
                pass
            log.warning("cached inference graph %s is unusable; exporting again", path)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings of "same" padding: shapes are fixed
            graph = to_onnx(_Embed(backbone).eval(), example, input_name="x", output_name="f")
        session = _session(graph, keep_memory=keep_memory)
        diff = float(np.abs(session.run(None, {"x": example.numpy()})[0] - want).max())
    except Exception:
        log.warning("cannot compile backbone %s; using eager mode", backbone.name, exc_info=True)
        return None
    if not diff <= _TOLERANCE:
        log.warning("compiled %s differs by %.2g; using eager mode", backbone.name, diff)
        return None
    if path is not None:
        _write_graph(path, graph)
    return _Compiled(session, shape, _weights_version(model))


@torch.inference_mode()
def embed_tensors(backbone: Backbone, batch: torch.Tensor) -> np.ndarray:
    """Preprocessed ``(N, 3, H, W)`` -> features ``(N, D)`` float32.

    Uses the ONNX Runtime session from :func:`prepare_backbone` when it is still current
    (same weights, eval mode, same input shape), else ``backbone.embed`` channels-last.
    Safe to call from several threads at once: the session and the eager model are only read.
    """
    compiled = _compiled.get(backbone.model)
    if (
        compiled is not None
        and len(batch)
        and tuple(batch.shape[1:]) == compiled.input_shape
        and not backbone.model.training
        and _weights_version(backbone.model) == compiled.version
    ):
        x = np.ascontiguousarray(batch.float().numpy())
        return np.asarray(compiled.session.run(None, {"x": x})[0], dtype=np.float32)
    out = backbone.embed(batch.contiguous(memory_format=torch.channels_last))
    return out.float().numpy()


def prepare_backbone(
    backbone: Backbone, graph_dir: Path | None = None, *, keep_memory: bool = False
) -> Backbone:
    """Put a backbone into its fastest inference form: channels-last eager, plus an ONNX
    Runtime session for :func:`embed_tensors` (its graph cached in ``graph_dir``).

    ``keep_memory``: the session keeps its buffers between runs (ONNX Runtime's arena, as
    large as the largest batch run at once). Without it every batch maps its activations
    afresh and faults them in page by page (~290 MB, 74k page faults per 32 images with
    efficientnet_lite0, ~18 % of extraction's CPU time); but an arena keeps the peak of
    all concurrent batches for the process's life (the API grew by GBs under concurrent
    predicts), so only a process that embeds one batch at a time (the worker) keeps it.
    Call it after the weights are final (finetuned state loaded); a later in-place change
    of the weights is detected and :func:`embed_tensors` falls back to eager.
    """
    backbone.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    compiled = _compile(backbone, graph_dir, keep_memory=keep_memory)
    if compiled is not None:
        _compiled[backbone.model] = compiled
    return backbone


def warm_up(backbone: Backbone, batch_size: int) -> None:
    """Decode a 640x480 noise JPEG through the backbone's preprocessing and run ``batch_size``
    copies through :func:`embed_tensors`, so a prewarm pays what a first job or predict
    would: the first run at a batch shape plans and allocates that shape's buffers
    (without an arena, 1.1 GB more memory faulted in for 32 images than a later run), and
    the first decode and resize set up their code paths (~17 ms more than later ones in a
    new API process, measured)."""
    buffer = io.BytesIO()
    Image.effect_noise((640, 480), 64).convert("RGB").save(buffer, format="JPEG")
    image = load_for_model(buffer.getvalue(), backbone.preprocessing, max_pixels=640 * 480)
    embed_tensors(backbone, image.expand(batch_size, *image.shape).contiguous())


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
