"""Pictures the console draws on the server, without a JS library: the confusion matrix as
a heat map (cell colours for an HTML table) and the localization map as a coloured,
transparent overlay for the photo it was computed on."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Light to dark blue ("Blues"); black text, white from DARK_FROM on: every cell keeps a
# contrast ratio of at least 4.5:1 (WCAG AA).
_LIGHT = np.array([247, 251, 255], dtype=np.float64)
_DARK = np.array([8, 48, 107], dtype=np.float64)
DARK_FROM = 0.65


@dataclass(frozen=True)
class Cell:
    """One confusion-matrix cell: its count, its share of the true class's images, and the
    colours that draw it."""

    count: int
    share: float
    background: str
    color: str
    diagonal: bool


def blend(share: float) -> str:
    """The heat-map colour of ``share`` (0-1) as ``#rrggbb``."""
    t = min(1.0, max(0.0, float(share)))
    r, g, b = np.round(_LIGHT + (_DARK - _LIGHT) * t).astype(int)
    return f"#{r:02x}{g:02x}{b:02x}"


def confusion_cells(matrix: list[list[int]]) -> list[list[Cell]]:
    """The matrix's cells coloured by row share (each true class's recall spread over the
    predicted classes), so a small class reads as clearly as a large one."""
    out = []
    for i, row in enumerate(matrix):
        total = sum(row)
        cells = []
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            cells.append(
                Cell(
                    count=int(count),
                    share=share,
                    background=blend(share),
                    color="#ffffff" if share >= DARK_FROM else "#000000",
                    diagonal=i == j,
                )
            )
        out.append(cells)
    return out


def heatmap_overlay(grey_png: bytes) -> bytes:
    """The greyscale map ``/predict`` returns (``heatmap_png``: 255 where the model looks
    most) as an RGBA PNG to lay over the photo: yellow to red as the value grows, and
    transparent where the model does not look."""
    with Image.open(io.BytesIO(grey_png)) as img:
        v = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    rgba = np.empty((*v.shape, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.round(220 * (1.0 - v)).astype(np.uint8)
    rgba[..., 2] = 0
    rgba[..., 3] = np.round(170 * v).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()
