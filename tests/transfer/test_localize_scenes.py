"""Weakly-supervised localization in real scenes: six objects from different photos at a
third of the image side, new backgrounds at test, labels per image only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import ImageOps

from app.transfer import Predictor, get_method
from app.transfer.backbones import load_backbone
from app.transfer.localize import Box, box_from_map, view_maps
from app.transfer.preprocess import decode_image
from tests.scenes import object_scenes
from tests.transfer.test_localize import scene_data


def test_boxes_beat_the_centred_box_on_new_scenes() -> None:
    model = get_method("linear_probe").fit(scene_data(object_scenes(84, split="train", seed=0)))
    objects = object_scenes(24, split="test", seed=1, sides=(1 / 3, 1 / 3), empty=False)
    found = Predictor().localize(
        "m", model.to_files().__getitem__, [s.png for s in objects], [s.label for s in objects]
    )
    truth = [s.box for s in objects]
    iou = float(np.mean([f.box.iou(t) for f, t in zip(found, truth, strict=True)]))  # type: ignore[union-attr, arg-type]
    centred = Box(1 / 3, 1 / 3, 1 / 3, 1 / 3)  # the right size, where one would guess
    guess = float(np.mean([centred.iou(t) for t in truth]))  # type: ignore[arg-type]
    print(f"mean IoU {iou:.3f} over {len(objects)} objects at 1/3 (centred box {guess:.3f})")
    # the 7x7 map at 224 px with the old threshold 0.6 gets 0.56 here, the 448 px map 0.66
    assert iou >= 0.6 and iou >= guess + 0.25, (iou, guess)


def test_mass_box_spans_every_region_weighted_by_the_map() -> None:
    heat = np.zeros((100, 200))
    heat[10:30, 20:60] = 1.0
    heat[70:75, 150:160] = 0.9
    assert box_from_map(heat, threshold=0.5, mass=None) == Box(0.1, 0.1, 0.2, 0.2)
    assert box_from_map(heat, threshold=0.5, mass=1.0) == Box(0.1, 0.1, 0.7, 0.65)
    # the small region holds 45 of the mass 845: the central 80 % (quantiles 0.1 and 0.9 of
    # each marginal) leaves it out and trims the large one: rows 12-29, columns 24-58
    box = box_from_map(heat, threshold=0.5, mass=0.8)
    assert (box.left, box.top, box.width, box.height) == pytest.approx((0.12, 0.12, 0.175, 0.18))
    assert box_from_map(heat, threshold=0.95, mass=1.0) == Box(0.1, 0.1, 0.2, 0.2)


def test_mirrored_view_is_the_mirror_of_the_plain_one() -> None:
    backbone = load_backbone("efficientnet_lite0")
    model = get_method("linear_probe").fit(scene_data(object_scenes(14, split="train", seed=3)))
    scenes = object_scenes(2, split="test", seed=4, empty=False)
    images = [decode_image(s.png, max_pixels=10**8) for s in scenes]
    target = torch.tensor([model.classes.index(s.label) for s in scenes])
    plain = view_maps(backbone, model.head, images, target, preprocessing=model.preprocessing)
    mirrored = view_maps(
        backbone, model.head, [ImageOps.mirror(i) for i in images], target,
        preprocessing=model.preprocessing, flip=True,
    )  # fmt: skip
    assert torch.allclose(mirrored, plain.flip(-1), atol=1e-3)
    assert plain.shape == (2, 224, 224) and not torch.allclose(plain, plain.flip(-1), atol=0.1)
