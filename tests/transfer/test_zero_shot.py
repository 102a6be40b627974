"""Zero-shot methods on real images: scikit-image photos named by their classes, and
scikit-learn digits described by their seven-segment attributes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.errors import ClassAttributesInvalid, InvalidParams, TooFewClasses
from app.transfer import Predictor, TrainedModel, TrainingData, get_method
from app.transfer.artifacts import is_shared_file
from app.transfer.backbones import load_backbone
from app.transfer.data import ClassInfo, Sample
from app.transfer.heads import ConSEHead
from app.transfer.methods.zero_shot import imagenet_classifier, imagenet_membership
from app.transfer.preprocess import load_for_model
from tests.factories import digit_images, encode, photo

PHOTOS = {"chelsea": "cat", "coffee": "coffee", "rocket": "rocket", "astronaut": "astronaut"}
#: Seven-segment display: which of the segments a..g each digit lights (a real attribute code).
SEGMENTS = {
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg",
    "5": "acdfg", "6": "acdefg", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}  # fmt: skip


def crops(name: str, n: int, seed: int = 0) -> list[bytes]:
    """``n`` random crops (60-100% of each side) and flips of a scikit-image photo, as PNG."""
    rng = np.random.default_rng(seed)
    base = photo(name)
    h, w = base.shape[:2]
    out = []
    for _ in range(n):
        s = rng.uniform(0.6, 1.0)
        ch, cw = int(h * s), int(w * s)
        y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = base[y0 : y0 + ch, x0 : x0 + cw]
        out.append(encode(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return out


def dataset(
    items: list[tuple[str, bytes, str]], classes: list[ClassInfo], **kwargs: object
) -> TrainingData:
    """``(label, png, split)`` triples plus the declared classes."""
    blobs = {f"k{i}": png for i, (_, png, _) in enumerate(items)}
    samples = [
        Sample(key=f"k{i}", label=label, split=split) for i, (label, _, split) in enumerate(items)
    ]
    return TrainingData(
        samples=samples,
        load_bytes=lambda s: blobs[s.key],
        classes=classes,
        **kwargs,  # type: ignore[arg-type]
    )


def photo_items(per_photo: int, split: str = "auto") -> list[tuple[str, bytes, str]]:
    return [(label, png, split) for name, label in PHOTOS.items() for png in crops(name, per_photo)]


def test_the_head_reuses_the_backbones_own_imagenet_classifier() -> None:
    backbone = load_backbone("efficientnet_lite0")
    weight, bias = imagenet_classifier(backbone)
    x = load_for_model(encode(photo("chelsea")), backbone.preprocessing, max_pixels=10**8)
    with torch.inference_mode():
        logits = backbone.model(x.unsqueeze(0))
        ours = backbone.embed(x.unsqueeze(0)) @ weight.T + bias
    assert torch.allclose(logits, ours, atol=1e-4)


def test_names_only_model_serves_without_claiming_an_accuracy() -> None:
    classes = [ClassInfo(n) for n in ("cat", "coffee", "rocket")]
    data = dataset([], classes)
    model = get_method("zero_shot").fit(data)
    assert model.classes == ["cat", "coffee", "rocket"]
    m = model.metrics
    assert m["validation"] == "none" and m["accuracy"] is None and m["n_validation"] == 0
    assert m["reject_below"] is None
    files = model.to_files()
    assert {n for n in files if not is_shared_file(n)} == {"model.json", "head.safetensors"}
    assert len(files["head.safetensors"]) < 16 * 1024  # its own class vectors or mapping only
    predictor = Predictor()
    probes = [encode(photo(n)) for n in ("chelsea", "coffee", "rocket")]
    got = predictor.predict("zs", files.__getitem__, probes, top_k=3)
    assert [p.label for p in got] == ["cat", "coffee", "rocket"]
    assert all(abs(sum(s for _, s in p.scores) - 1) < 1e-5 for p in got)
    loaded = TrainedModel.from_files(files.__getitem__)
    x = torch.randn(2, 1280)
    with torch.inference_mode():
        assert torch.equal(model.head(x), loaded.head(x))


def test_zero_shot_accuracy_on_real_photos_is_far_above_chance() -> None:
    data = dataset(photo_items(4), [])
    model = get_method("zero_shot").fit(data)
    m = model.metrics
    print(f"\nzero_shot on 16 photo crops, 4 classes: accuracy {m['accuracy']:.3f} (chance 0.25)")
    assert m["validation"] == "zero-shot" and m["n_validation"] == 16 and m["n_train"] == 0
    assert m["accuracy"] >= 0.75
    assert m["baseline"]["accuracy"] == 0.25  # the majority class of the measured images
    assert 0 < m["reject_below"] < 1


def test_imagenet_sum_is_offered_only_when_every_name_covers_imagenet_classes() -> None:
    membership = imagenet_membership(["cat", "coffee"])
    assert membership is not None and membership.shape == (2, 1000)
    assert membership[0, 285] == 1  # Egyptian cat
    assert membership[1, 967] == 1  # espresso: "strong black coffee ..."
    assert imagenet_membership(["cat", "astronaut"]) is None
    items = [(label, png, "auto") for label, png, _ in photo_items(3) if label != "astronaut"]
    model = get_method("zero_shot").fit(dataset(items, []))  # mapping auto: both, picked by k-fold
    m = model.metrics
    assert set(m["mapping_accuracy"]) == {"conse", "imagenet_sum"}
    assert m["validation"] == "k-fold" and m["mapping"] in m["mapping_accuracy"]
    print(f"\nmapping accuracy on 9 photo crops: {m['mapping_accuracy']}, kept {m['mapping']}")
    with pytest.raises(InvalidParams):
        get_method("zero_shot").fit(
            dataset(photo_items(1), []),
            get_method("zero_shot").parse_params({"mapping": "imagenet_sum"}),
        )


def test_zero_shot_refuses_too_few_classes_and_bad_templates() -> None:
    with pytest.raises(TooFewClasses):
        get_method("zero_shot").check_data(dataset([], [ClassInfo("pigeon")]))
    with pytest.raises(InvalidParams):
        get_method("zero_shot").parse_params({"templates": ["a photo"]})


def segment_classes() -> list[ClassInfo]:
    return [
        ClassInfo(d, attributes={s: float(s in on) for s in "abcdefg"})
        for d, on in SEGMENTS.items()
    ]


def test_dap_recognises_digits_it_never_saw_from_their_segments() -> None:
    unseen = ["7", "8", "9"]
    seen = [d for d in SEGMENTS if d not in unseen]
    train = digit_images(20, [int(d) for d in seen])
    test = digit_images(10, range(10), offset=20)
    items = [(label, png, "train") for label, png in train] + [
        (label, png, "test") for label, png in test
    ]
    model = get_method("zero_shot_dap").fit(dataset(items, segment_classes()))
    m = model.metrics
    print(
        f"\nDAP on digits, 3 unseen: accuracy {m['accuracy']:.3f}, seen {m['seen_accuracy']:.3f}, "
        f"unseen {m['unseen_accuracy']:.3f}, H {m['harmonic_mean']:.3f} (chance 0.1)"
    )
    assert model.classes == list(SEGMENTS)
    assert m["validation"] == "test-split" and m["n_validation"] == 100
    assert m["accuracy"] > 0.3
    assert m["unseen_accuracy"] > 0.1  # images of classes never trained on, above chance
    assert sum(m["confusion_matrix"]["matrix"][i][i] for i in (7, 8, 9)) > 3


def test_dap_needs_attributes_on_every_class() -> None:
    classes = segment_classes()
    classes[3] = ClassInfo("3")
    items = [(label, png, "auto") for label, png in digit_images(3, [0, 1])]
    with pytest.raises(ClassAttributesInvalid):
        get_method("zero_shot_dap").check_data(dataset(items, classes))
    classes[3] = ClassInfo("3", attributes={s: 2.0 for s in "abcdefg"})
    with pytest.raises(ClassAttributesInvalid):
        get_method("zero_shot_dap").check_data(dataset(items, classes))


def test_generalized_model_covers_classes_without_images() -> None:
    items = [
        (label, png, "test" if label == "rocket" or i % 3 == 0 else "train")
        for i, (label, png, _) in enumerate(photo_items(6))
    ]
    data = dataset(items, [ClassInfo(n) for n in PHOTOS.values()])
    model = get_method("zero_shot_generalized").fit(data)
    m = model.metrics
    print(
        f"\ngeneralized on photos, rocket unseen: accuracy {m['accuracy']:.3f}, "
        f"seen {m['seen_accuracy']:.3f}, unseen {m['unseen_accuracy']:.3f} (chance 0.25)"
    )
    assert model.classes == sorted(PHOTOS.values())
    assert m["validation"] == "test-split"
    assert m["accuracy"] >= 0.6
    assert m["unseen_accuracy"] > 0.25


def test_wordnet_cover_joins_conse_and_travels_with_the_model() -> None:
    data = dataset([], [ClassInfo(n) for n in ("cat", "coffee", "rocket")])
    model = get_method("zero_shot").fit(data)
    described = model.metrics["wordnet"]
    assert described["cat"]["synset"] == "n02121620"  # feline, not "guy"
    assert described["coffee"]["imagenet_classes"] >= 1  # espresso
    head = model.head
    assert isinstance(head, ConSEHead) and head.hierarchy_weight > 0
    assert head.membership is not None and head.membership.dtype == torch.uint8
    assert head.membership[0, 281:286].all() and not head.membership[1:, 281:286].any()
    files = model.to_files()
    loaded = TrainedModel.from_files(files.__getitem__)
    x = torch.randn(2, 1280)
    with torch.inference_mode():
        assert torch.equal(model.head(x), loaded.head(x))
    probes = [encode(photo(n)) for n in ("chelsea", "coffee", "rocket")]
    got = Predictor().predict("zs-wordnet", files.__getitem__, probes, top_k=3)
    assert [p.label for p in got] == ["cat", "coffee", "rocket"]


def test_without_wordnet_the_method_says_so_and_still_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.transfer.methods import zero_shot

    monkeypatch.setattr(zero_shot, "load_wordnet", lambda: None)  # as if nothing installed it
    data = dataset(photo_items(2)[:6], [])  # cat and coffee crops
    model = get_method("zero_shot").fit(
        data, get_method("zero_shot").parse_params({"mapping": "conse"})
    )
    assert model.metrics["wordnet"] == zero_shot.WORDNET_MISSING
    assert model.head.membership is None  # type: ignore[union-attr]
    assert model.metrics["accuracy"] >= 0.5


def _hub_head(calibration: float, imagenet_temperature: float = 1.0, top_t: int = 1) -> ConSEHead:
    """A ConSE head whose 1000 "ImageNet" texts all lean towards one direction ``m`` (as
    sentence vectors do) and whose class 0 is named by ``m`` itself: near every text, so it
    takes every image uncalibrated. Class 1 is named by ``d``, the direction of ImageNet
    classes 0-9 (which are ``m + d``), a little off it. Features are one-hot ImageNet logits."""
    g = torch.Generator().manual_seed(0)
    m, d, e = torch.eye(16)[:3]
    source = m + 0.3 * torch.randn(1000, 16, generator=g) * (1 - torch.eye(16)[:2].sum(0))
    source[:10] = m + d
    codes = torch.stack([m, d + 0.1 * e])
    weight, bias = 10 * torch.eye(1000), torch.zeros(1000)
    source = torch.nn.functional.normalize(source, dim=-1)
    return ConSEHead(
        weight, bias, source, torch.nn.functional.normalize(codes, dim=-1), top_t=top_t,
        temperature=0.05, calibration=calibration, imagenet_temperature=imagenet_temperature,
    )  # fmt: skip


def test_calibration_stops_a_name_near_every_imagenet_text_taking_every_image() -> None:
    images = torch.eye(1000)[[0, 5, 9, 100, 500]]  # ImageNet classes 0-9 are class 1's
    with torch.inference_mode():
        plain = _hub_head(0.0)(images).argmax(dim=-1).tolist()
        calibrated = _hub_head(1.0)(images).argmax(dim=-1).tolist()
    assert plain == [0, 0, 0, 0, 0]  # the hub absorbs everything
    assert calibrated == [1, 1, 1, 0, 0]
    head = _hub_head(1.0)
    loaded = ConSEHead.from_tensors(head.tensors(), head.config())
    assert loaded.calibration == 1.0
    torch.testing.assert_close(loaded(images), head(images))
    old = {
        k: v for k, v in head.config().items() if k not in ("calibration", "imagenet_temperature")
    }
    stored_before = ConSEHead.from_tensors(head.tensors(), old)  # a model saved before both
    torch.testing.assert_close(stored_before(images), _hub_head(0.0)(images))


def test_imagenet_temperature_divides_the_logits_before_the_softmax() -> None:
    x = torch.full((1, 1000), -0.5)  # logit -5 outside the top 3
    x[0, 10:13] = torch.tensor([0.4, 0.2, 0.0])  # logits 4, 2, 0 (weight 10 I)
    head = _hub_head(0.0, imagenet_temperature=2.0, top_t=3)
    p = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), dim=0)  # (4, 2, 0) / 2 among the top 3
    want = torch.nn.functional.normalize(p @ head.source[10:13], dim=-1)
    torch.testing.assert_close(head.embed(x)[0], want)
    assert not torch.allclose(_hub_head(0.0, top_t=3).embed(x)[0], want)
