"""Decoding and preprocessing: one function from bytes to the tensor a backbone sees.

Training, evaluation and prediction all call :func:`preprocess`, with the
:class:`Preprocessing` config stored in the model artifact, so a model is always served
exactly the pixels it was trained on.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import DecodeBudgetExceeded, ImageTooLarge, ImageUndecodable

#: Formats accepted for upload and prediction (GIF: the first frame).
ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "GIF"}
ACCEPTED = "JPEG, PNG, WebP, BMP or GIF (first frame)"
_EXTENSIONS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".bmp": "BMP", ".dib": "BMP", ".gif": "GIF",
}  # fmt: skip

# We check pixel counts ourselves against a configurable limit before decoding.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def _open(data: bytes, *, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageUndecodable(
            f"The file is not an image Dovecote can read; send one of {ACCEPTED}."
        ) from exc
    if img.format not in ALLOWED_FORMATS:
        raise ImageUndecodable(
            f"Image format {img.format} is not accepted; send one of {ACCEPTED}."
        )
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image claims {width}x{height} pixels, over the limit of {max_pixels}.",
            width=width,
            height=height,
        )
    return img


class PixelBudget:
    """The pixels one request may still decode. A few kilobytes of lossless WebP can
    claim 49 megapixels; this bounds the CPU a request costs, whatever its bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def charge(self, width: int, height: int) -> None:
        if width * height > self.left:
            raise DecodeBudgetExceeded(
                f"This request already decoded {self.limit - self.left} pixels; a {width}x"
                f"{height} image would pass the limit of {self.limit} per request "
                "(DOVECOTE_MAX_PIXELS_PER_REQUEST). Send it in another request.",
                limit=self.limit,
            )
        self.left -= width * height


def image_size(data: bytes, *, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` from the header alone (no pixel decoded); refuses as :func:`check_image`."""
    return _open(data, max_pixels=max_pixels).size  # type: ignore[no-any-return]


def check_image(
    data: bytes, *, filename: str | None, max_pixels: int, budget: PixelBudget | None = None
) -> ImageInfo:
    """Fully decode ``data`` once to prove it is a whole, accepted image.

    Refuses non-images, truncated files, images whose pixel count exceeds ``max_pixels``
    (decompression bombs: the header is read before any pixel is), images past the
    request's ``budget`` and files whose name claims another image format than the bytes
    hold (a GIF renamed ``.jpg``).
    """
    img = _open(data, max_pixels=max_pixels)
    claimed = _EXTENSIONS.get(_suffix(filename))
    if claimed is not None and claimed != img.format:
        raise ImageUndecodable(
            f"The file is named {filename!r} but holds a {img.format} image; "
            "rename it to match its content.",
            format=img.format,
        )
    if budget is not None:
        budget.charge(*img.size)
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageUndecodable(
            f"The {img.format} image is truncated or corrupt; re-export it as one of {ACCEPTED}."
        ) from exc
    return ImageInfo(format=img.format or "", width=img.size[0], height=img.size[1])


def _suffix(filename: str | None) -> str:
    if not filename or "." not in filename:
        return ""
    return "." + filename.rsplit(".", 1)[-1].lower()


def decode_image(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Bytes -> RGB image (EXIF orientation applied; GIF: first frame).

    ``draft_size`` lets JPEG decode at a reduced DCT scale that still covers that many
    pixels per side; it is the speed trick behind fast prediction and is used alike in
    training and prediction.
    """
    img = _open(data, max_pixels=max_pixels)
    if draft_size and img.format == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    try:
        img.seek(0)
        img = ImageOps.exif_transpose(img) or img
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            background = Image.new("RGB", img.size, (255, 255, 255))
            background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
            return background
        return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageUndecodable(
            f"The image is truncated or corrupt; re-export it as one of {ACCEPTED}."
        ) from exc


@dataclass(frozen=True)
class Preprocessing:
    """The eval transform of a backbone: resize, crop, normalise.

    ``crop_mode="squash"`` with ``crop_pct=1.0`` (Dovecote's default) resizes the whole
    photo to ``input_size``: a pigeon at the edge of the frame is never cropped away.
    """

    input_size: tuple[int, int, int]
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0
    crop_mode: str = "squash"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=tuple(d["input_size"]),  # type: ignore[arg-type]
            interpolation=d["interpolation"],
            mean=tuple(d["mean"]),  # type: ignore[arg-type]
            std=tuple(d["std"]),  # type: ignore[arg-type]
            crop_pct=float(d["crop_pct"]),
            crop_mode=d["crop_mode"],
        )

    @property
    def side(self) -> int:
        return max(self.input_size[1:])


@lru_cache(maxsize=32)
def eval_transform(cfg: Preprocessing) -> Any:
    """The deterministic transform of ``cfg`` (PIL image -> normalised tensor)."""
    from timm.data import create_transform

    return create_transform(
        input_size=cfg.input_size,
        interpolation=cfg.interpolation,
        mean=cfg.mean,
        std=cfg.std,
        crop_pct=cfg.crop_pct,
        crop_mode=cfg.crop_mode,
        is_training=False,
    )


def load_for_model(data: bytes, cfg: Preprocessing, *, max_pixels: int) -> torch.Tensor:
    """Bytes -> one preprocessed tensor ``(3, H, W)``: the single path used everywhere."""
    img = decode_image(data, max_pixels=max_pixels, draft_size=cfg.side)
    return eval_transform(cfg)(img)
