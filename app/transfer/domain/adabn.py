"""AdaBN: BatchNorm statistics re-estimated on each domain's own images.

Li, Wang, Shi, Liu & Hou, 2016, "Revisiting Batch Normalization For Practical Domain
Adaptation". A BatchNorm layer maps channel :math:`c` of its input :math:`x` to

.. math:: y_c = \\gamma_c \\frac{x_c - \\mu_c}{\\sqrt{\\sigma^2_c + \\epsilon}} + \\beta_c

with :math:`\\mu, \\sigma^2` the running statistics of the data the network was trained on
(ImageNet here). AdaBN keeps every weight (:math:`\\gamma, \\beta`, the convolutions) and
replaces, in every layer, :math:`\\mu_c, \\sigma^2_c` by the statistics of the domain
:math:`d` an image comes from,

.. math:: \\mu^{(d)}_c = \\mathbb E_{x \\in d}[x_c], \\qquad
          \\sigma^{2\\,(d)}_c = \\mathrm{Var}_{x \\in d}[x_c],

so that every layer's activations are standardised per domain: the shift of first and
second moments that separates the domains, layer by layer, is gone before the pooled
features reach the classifier. No label is read; no weight is trained.

Estimation, one pass over a domain's images without gradient: the running statistics are
reset, only the BatchNorm layers are put in train mode (dropout and the rest stay in
eval), with ``momentum=None`` (PyTorch's cumulative average), and the images go through in
:math:`K` near-equal batches :math:`B_1 \\dots B_K`, in a fixed order (by content hash):

.. math:: \\hat\\mu = \\frac1K \\sum_k \\mathrm{mean}_{B_k}(x), \\qquad
          \\hat\\sigma^2 = \\frac1K \\sum_k \\mathrm{var}_{B_k}(x) \\quad \\text{(unbiased per batch)}

each layer seeing its input as the batch-normalised layers below produce it, as in
training. The features ``(N, D)`` are then extracted in eval mode with those statistics.

Here both domains get their own statistics: the source rows (statistics of every source
image) train the classifier, the target rows (statistics of the *unlabeled* target images;
the labeled target ``test`` split is featurised with those, never with its own) are what
it reads, and the served network carries the target's statistics. The combinations run
an algorithm of this folder on those features instead of the frozen ones (:func:`on_adabn`):
``adabn`` (the linear probe, the paper's method), ``adabn_coral`` (what per-layer
standardisation leaves of the feature covariance shift, aligned by CORAL) and
``adabn_self_training``.

The adapted network is a backbone of its own: its weights digest is the pretrained one's
with the statistics' image set (:func:`statistics_digest`), so its features are cached by
:func:`~app.transfer.features.extract_features` like any backbone's, under
``<cache>/<adapted cache key>/``, and its statistics beside them
(``statistics.safetensors``): a second job on the same images costs no backbone pass.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from app.transfer.backbones import Backbone, get_spec
from app.transfer.data import Sample
from app.transfer.domain.base import Adapted, Algorithm, Task
from app.transfer.features import (
    FeatureCache,
    extract_features,
    prepare_backbone,
    write_atomically,
)
from app.transfer.preprocess import load_for_model

log = logging.getLogger(__name__)

#: Bump when what the statistics depend on changes: older cached statistics are ignored.
FORMAT = 1
STATISTICS_FILE = "statistics.safetensors"


def batchnorm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def statistics_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm buffers of ``network`` (running mean, variance, batch count) by name."""
    names = {id(m) for m in batchnorm_layers(network)}
    return {
        f"{prefix}.{name}": buf.detach().clone().contiguous()
        for prefix, module in network.named_modules()
        if id(module) in names
        for name, buf in module.named_buffers(recurse=False)
        if buf is not None
    }


@torch.no_grad()
def estimate_statistics(network: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate, in place, every BatchNorm layer's running mean and variance as the
    cumulative average over ``batches`` (preprocessed ``(n, 3, H, W)`` each), the rest of
    the network in eval mode; leaves ``network`` in eval mode, its weights untouched."""
    norms = batchnorm_layers(network)
    momenta = [m.momentum for m in norms]
    network.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for x in batches:
        network.forward_head(network.forward_features(x), pre_logits=True)  # type: ignore[operator]
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    network.eval()


def statistics_digest(backbone: Backbone, keys: Iterable[str], batch_size: int) -> str:
    """What the re-estimated statistics depend on: the pretrained weights, the set of
    images (content hashes; their order is fixed by sorting) and the batch size."""
    h = hashlib.sha256(f"adabn/{FORMAT}/{backbone.weights_digest}/{batch_size}".encode())
    for key in sorted(set(keys)):
        h.update(b"\n" + key.encode())
    return h.hexdigest()


class DomainStatistics:
    """The AdaBN features of a job's rows and the network it serves.

    ``domains``: per domain, the rows whose images its statistics are estimated on and the
    rows featurised with them (each row in exactly one domain). ``served``: the domain
    whose statistics the served network carries (the target). Everything is computed on
    first use and kept; with ``cache_dir``, features and statistics are read from and
    written to the feature cache.
    """

    def __init__(
        self,
        backbone: Backbone,
        samples: Sequence[Sample],
        load_bytes: Callable[[Sample], bytes],
        domains: Sequence[tuple[np.ndarray, np.ndarray]],
        *,
        served: int,
        max_pixels: int,
        batch_size: int = 32,
        cache_dir: Path | None = None,
    ) -> None:
        self.backbone, self.samples, self.load_bytes = backbone, samples, load_bytes
        self.domains, self.served = domains, served
        self.max_pixels, self.batch_size, self.cache_dir = max_pixels, batch_size, cache_dir
        self._feats: np.ndarray | None = None
        self._network: nn.Module | None = None

    @staticmethod
    def applies_to(backbone: Backbone) -> bool:
        """Whether AdaBN can serve this backbone: a timm network (its classifier can be
        dropped, its pooled features read) with BatchNorm layers (else nothing changes)."""
        return get_spec(backbone.name).family == "timm" and bool(batchnorm_layers(backbone.model))

    def _adapted(self, domain: int) -> tuple[Backbone, Path | None]:
        """A copy of the backbone named by its statistics (no statistics estimated yet),
        and where those statistics are cached."""
        stats_rows = self.domains[domain][0]
        digest = statistics_digest(
            self.backbone, (self.samples[r].key for r in stats_rows.tolist()), self.batch_size
        )
        model = copy.deepcopy(self.backbone.model)
        model.reset_classifier(0)  # type: ignore[operator]
        adapted = dataclasses.replace(self.backbone, model=model, weights_digest=digest)
        where = (
            None if self.cache_dir is None else self.cache_dir / adapted.cache_key / STATISTICS_FILE
        )
        return adapted, where

    def _with_statistics(self, domain: int, tick: Callable[[], None]) -> Backbone:
        """The backbone with ``domain``'s statistics: read from the cache, else estimated."""
        adapted, where = self._adapted(domain)
        try:
            state = load_tensors(where.read_bytes()) if where is not None else None
        except (OSError, ValueError):  # absent or unreadable: estimated again
            state = None
        expected = statistics_state(adapted.model)
        if state is not None and state.keys() == expected.keys():
            adapted.model.load_state_dict(state, strict=False)
        else:
            estimate_statistics(adapted.model, self._batches(self.domains[domain][0], tick))
            if where is not None:
                try:
                    write_atomically(where, save_tensors(statistics_state(adapted.model)))
                except OSError:
                    log.warning("cannot cache AdaBN statistics at %s", where, exc_info=True)
        return adapted

    def _batches(self, rows: np.ndarray, tick: Callable[[], None]) -> Iterable[torch.Tensor]:
        order = sorted(rows.tolist(), key=lambda r: self.samples[r].key)
        for chunk in np.array_split(order, max(1, -(-len(order) // self.batch_size))):
            tick()
            yield torch.stack([
                load_for_model(self.load_bytes(self.samples[r]), self.backbone.preprocessing,
                               max_pixels=self.max_pixels)
                for r in chunk.tolist()
            ]).contiguous(memory_format=torch.channels_last)  # fmt: skip

    def features(self, tick: Callable[[], None] = lambda: None) -> np.ndarray:
        """``(N, D)``: every row's features with its own domain's statistics."""
        if self._feats is not None:
            return self._feats
        feats = np.full((len(self.samples), self.backbone.num_features), np.nan, np.float32)
        for d, (_, rows) in enumerate(self.domains):
            adapted, _ = self._adapted(d)
            if self.cache_dir is None or not self._all_cached(adapted, rows):
                adapted = prepare_backbone(self._with_statistics(d, tick))
                if d == self.served:
                    self._network = adapted.model
            feats[rows] = extract_features(
                [self.samples[r] for r in rows.tolist()], backbone=adapted,
                load_bytes=self.load_bytes, max_pixels=self.max_pixels,
                batch_size=self.batch_size, cache_dir=self.cache_dir,
                progress=lambda *_: tick(),
            )  # fmt: skip
        self._feats = feats
        return feats

    def _all_cached(self, adapted: Backbone, rows: np.ndarray) -> bool:
        assert self.cache_dir is not None
        cache = FeatureCache(self.cache_dir, adapted.cache_key)
        return all(cache.has(self.samples[r].key) for r in rows.tolist())

    def network(self, tick: Callable[[], None] = lambda: None) -> nn.Module:
        """The backbone (no classifier) with the served domain's statistics, eval mode."""
        if self._network is None:
            self._network = self._with_statistics(self.served, tick).model
        return self._network


def on_adabn(inner: Algorithm) -> Algorithm:
    """``inner`` run on the AdaBN features of the task's pool instead of the frozen ones;
    the result reads those features and serves the network with the target's statistics."""

    def algorithm(
        task: Task, config: dict[str, Any], seed: int, tick: Callable[[], None]
    ) -> Adapted:
        statistics = task.pool.adabn
        if statistics is None:
            raise ValueError("AdaBN needs a pool with DomainStatistics (a BatchNorm backbone)")
        feats = statistics.features(tick)
        pool = dataclasses.replace(task.pool, feats=feats)
        adapted = inner(dataclasses.replace(task, pool=pool), config, seed, tick)
        adapted.feats, adapted.network = feats, statistics.network(tick)
        return adapted

    algorithm.__doc__ = f"AdaBN features, then: {inner.__doc__ or inner.__name__}"
    return algorithm
