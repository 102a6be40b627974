r"""Weakly-supervised localization: where in the image a classifier sees its class.

Grad-CAM (Selvaraju et al. 2017) on the backbone's spatial feature map
:math:`A \in \mathbb{R}^{K \times h \times w}` before global pooling, for class score
:math:`s_c` (the head's :meth:`~app.transfer.heads.Head.log_scores`):

.. math:: \alpha_k = \frac{1}{hw} \sum_{ij} \frac{\partial s_c}{\partial A_{kij}}, \qquad
          M_c = \mathrm{ReLU}\Big(\sum_k \alpha_k A_k\Big).

For a linear head on average-pooled features, :math:`s_c = w_c^\top \bar A + b_c`, so
:math:`\alpha_k = w_{ck}/hw` and :math:`M_c \propto \mathrm{ReLU}(w_c^\top A_{ij})`: exactly the
class activation map of Zhou et al. 2016 (the linear head applied at every position). One
code path therefore gives CAM for linear heads and its gradient generalisation for every
other head (kNN, L2-normalised linear), with no per-head code.

Finer maps: a CNN's last map has stride 32 (7×7 at 224 px), coarse next to an object a
third of the image wide; the map is therefore also computed with the photo resized to
``scales`` × the model's input side (a 448 px input gives 14×14 with the same head), and
of its mirror image (flipped back), and the views' maps, each scaled to max 1, are averaged
at the model's input resolution.

Box: the map :math:`M` thresholded at ``threshold * max``. With ``mass=None``, the bounding
box of the largest 8-connected region above it; with ``mass=q``, the box between the
:math:`(1-q)/2` and :math:`(1+q)/2` quantiles of the row and column marginals of
:math:`M \cdot [M \ge t \max M]` (all regions, weighted by the map: a diffuse map that
splits the object into pieces still gives one box). Coordinates are normalised to 0–1 as
``left, top, width, height`` (Azure Custom Vision's convention). The model sees the whole
photo resized without cropping, so normalised input coordinates are normalised image
coordinates.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from app.errors import LocalizationUnsupported
from app.transfer.backbones import Backbone
from app.transfer.heads import Head
from app.transfer.preprocess import Preprocessing, eval_transform

#: Fraction of the map's maximum kept as "object"; chosen on bench/localization_iou.py
#: (its validation seed), not on the reported seeds.
DEFAULT_THRESHOLD = 0.3
#: Input sides, as multiples of the model's, whose maps are averaged (bench/localization_iou.py).
DEFAULT_SCALES: tuple[float, ...] = (2.0,)
#: Whether the mirror image's map is averaged in.
DEFAULT_FLIP = False
#: Share of the thresholded map's mass the box holds; None: the largest region's box.
DEFAULT_MASS: float | None = None


@dataclass(frozen=True)
class Box:
    """Normalised 0–1 image coordinates of the box's top-left corner and its size."""

    left: float
    top: float
    width: float
    height: float

    def iou(self, other: Box) -> float:
        w = min(self.left + self.width, other.left + other.width) - max(self.left, other.left)
        h = min(self.top + self.height, other.top + other.height) - max(self.top, other.top)
        inter = max(0.0, w) * max(0.0, h)
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Localization:
    """Where class ``label`` is: its ``box`` and the ``heatmap`` (input resolution, 0–1)."""

    label: str
    box: Box
    heatmap: np.ndarray

    def heatmap_png(self) -> bytes:
        """The heat-map as an 8-bit greyscale PNG (255 = the map's maximum); it covers the
        whole photo: stretch it over the image to overlay it."""
        buf = io.BytesIO()
        Image.fromarray(np.round(self.heatmap * 255).astype(np.uint8), mode="L").save(
            buf, format="PNG"
        )
        return buf.getvalue()


def class_activation_maps(
    backbone: Backbone,
    head: Head,
    batch: torch.Tensor,
    classes: torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Grad-CAM maps ``(N, H, W)`` at ``size`` (default: the input resolution), each scaled
    to max 1 (all zero where the class has no positive evidence), for preprocessed ``batch
    (N, 3, H, W)`` and class indices ``classes (N,)``."""
    model = backbone.model
    with torch.no_grad():
        fmap = model.forward_features(batch)  # type: ignore[operator]
    if fmap.ndim != 4:
        raise LocalizationUnsupported(
            f"Backbone {backbone.name} has no spatial feature map to localize with."
        )
    fmap = fmap.detach().float().contiguous().requires_grad_(True)
    with torch.enable_grad():
        pooled = model.forward_head(fmap, pre_logits=True)  # type: ignore[operator]
        score = head.log_scores(pooled).gather(1, classes[:, None]).sum()
        (grad,) = torch.autograd.grad(score, fmap)
    maps = F.relu((grad.mean(dim=(2, 3), keepdim=True) * fmap.detach()).sum(dim=1))
    maps = F.interpolate(
        maps[:, None], size=size or batch.shape[2:], mode="bilinear", align_corners=False
    )
    maps = maps[:, 0].clamp_min(0)
    peak = maps.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return maps / peak[:, None, None]


def view_maps(
    backbone: Backbone,
    head: Head,
    images: Sequence[Image.Image],
    targets: torch.Tensor,
    *,
    preprocessing: Preprocessing,
    scale: float = 1.0,
    flip: bool = False,
) -> torch.Tensor:
    """Maps ``(N, H, W)`` at ``preprocessing``'s input size of ``images`` resized to
    ``scale`` × that size (mirrored and the map mirrored back with ``flip``)."""
    _, height, width = preprocessing.input_size
    cfg = replace(preprocessing, input_size=(3, round(height * scale), round(width * scale)))
    batch = torch.stack([eval_transform(cfg)(image) for image in images])
    if flip:
        batch = batch.flip(-1)
    maps = class_activation_maps(backbone, head, batch, targets, size=(height, width))
    return maps.flip(-1) if flip else maps


def mean_map(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The views' maps averaged, scaled to max 1 again."""
    mean = torch.stack(list(maps)).mean(dim=0)
    return mean / mean.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]


def _span(marginal: np.ndarray, mass: float) -> tuple[int, int]:
    """``[start, end)`` between the ``(1-mass)/2`` and ``(1+mass)/2`` quantiles."""
    cumulative = np.cumsum(marginal)
    total = cumulative[-1]
    start = np.searchsorted(cumulative, (1 - mass) / 2 * total, side="right")
    end = np.searchsorted(cumulative, ((1 + mass) / 2 - 1e-9) * total, side="left") + 1
    return int(start), int(max(end, start + 1))


def box_from_map(
    heatmap: np.ndarray, threshold: float = DEFAULT_THRESHOLD, mass: float | None = DEFAULT_MASS
) -> Box:
    """The box of the region where ``heatmap >= threshold * max``: of its largest
    8-connected component (``mass=None``), or holding the central ``mass`` share of the
    map's mass there (see the module); the whole image when the map is empty."""
    height, width = heatmap.shape
    peak = float(heatmap.max())
    if peak <= 0:
        return Box(0.0, 0.0, 1.0, 1.0)
    region = heatmap >= threshold * peak
    if mass is None:
        labels, _ = ndimage.label(region, structure=np.ones((3, 3)))
        region = labels == np.bincount(labels.ravel())[1:].argmax() + 1
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        (top, bottom), (left, right) = (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)
    else:
        weight = np.where(region, heatmap, 0.0)
        (top, bottom), (left, right) = _span(weight.sum(1), mass), _span(weight.sum(0), mass)
    return Box(
        left=left / width,
        top=top / height,
        width=(right - left) / width,
        height=(bottom - top) / height,
    )


def localize(
    backbone: Backbone,
    head: Head,
    images: Sequence[Image.Image],
    classes: list[str],
    targets: list[int],
    *,
    preprocessing: Preprocessing,
    threshold: float = DEFAULT_THRESHOLD,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = DEFAULT_FLIP,
    mass: float | None = DEFAULT_MASS,
) -> list[Localization]:
    """One :class:`Localization` per decoded image for class index ``targets[i]``: the mean
    of the maps at ``scales`` (and mirrored, with ``flip``), boxed by :func:`box_from_map`."""
    index = torch.tensor(targets)
    maps = mean_map(
        [
            view_maps(backbone, head, images, index, preprocessing=preprocessing, scale=s, flip=f)
            for s in scales
            for f in ((False, True) if flip else (False,))
        ]
    ).numpy()
    return [
        Localization(label=classes[t], box=box_from_map(m, threshold, mass), heatmap=m)
        for m, t in zip(maps, targets, strict=True)
    ]
