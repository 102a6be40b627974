"""Zero-shot models share the backbone's ImageNet classifier in the predictor's memory."""

from __future__ import annotations

import torch

from app.transfer.artifacts import TrainedModel
from app.transfer.heads import ConSEHead, LinearHead
from app.transfer.predictor import Predictor, SharedTensors
from app.transfer.preprocess import Preprocessing

PP = Preprocessing((3, 32, 32), "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _zero_shot(codes: torch.Tensor) -> TrainedModel:
    g = torch.Generator().manual_seed(0)  # the same "ImageNet classifier" in every model
    head = ConSEHead(
        torch.randn(1000, 256, generator=g), torch.randn(1000, generator=g),
        torch.randn(1000, 384, generator=g), codes, top_t=10, temperature=0.1,
    )  # fmt: skip
    classes = [f"c{i}" for i in range(len(codes))]
    return TrainedModel("zero_shot", "bb", "digest", PP, classes, head, metrics={})


def test_zero_shot_models_hold_the_imagenet_tensors_once() -> None:
    predictor = Predictor()
    files = {
        key: _zero_shot(torch.randn(3, 384, generator=torch.Generator().manual_seed(i))).to_files()
        for i, key in enumerate(["a", "b", "c"])
    }
    heads = [predictor.load(key, files[key].__getitem__).head for key in files]
    for name in ("imagenet_weight", "source"):  # the large ones (the bias is 4 KB)
        ptrs = {getattr(h, name).data_ptr() for h in heads}
        assert len(ptrs) == 1, name
    assert len({h.codes.data_ptr() for h in heads}) == 3  # each model's own classes
    x = torch.randn(2, 256)
    alone = TrainedModel.from_files(files["b"].__getitem__).head
    torch.testing.assert_close(heads[1](x), alone(x))  # sharing changes no answer


def test_small_or_different_tensors_are_not_shared() -> None:
    shared = SharedTensors(min_bytes=1024)
    small = torch.ones(10)
    assert shared.share(small) is small
    a, b = torch.zeros(1000), torch.zeros(1000)
    assert shared.share(a) is a and shared.share(b) is a
    c = torch.ones(1000)
    assert shared.share(c) is c
    head = LinearHead(torch.randn(3, 8), torch.zeros(3))
    Predictor().shared.share_buffers(head)  # nothing large: untouched, no error
