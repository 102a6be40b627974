"""Zero-shot models share the backbone's ImageNet classifier (and ImageNet's text vectors):
once in the predictor's memory, and once in the blob store."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from app.transfer.artifacts import HEAD_FILE, MODEL_JSON, TrainedModel, is_shared_file, shared_file
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


# --- stored artifacts: the shared parts once per installation ---------------------------


def _format_1(model: TrainedModel) -> dict[str, bytes]:
    """``model``'s artifact as written before shared tensors: every tensor in its head file."""
    files = model.to_files()
    manifest = json.loads(files[MODEL_JSON])
    tensors = load_tensors(files[HEAD_FILE])
    for name, digest in manifest["head"].pop("shared").items():
        tensors[name] = load_tensors(files[shared_file(digest)])["tensor"]
    manifest["format_version"] = 1
    return {MODEL_JSON: json.dumps(manifest).encode(), HEAD_FILE: save_tensors(tensors)}


def test_zero_shot_artifacts_store_only_their_own_tensors() -> None:
    a = _zero_shot(torch.randn(3, 384, generator=torch.Generator().manual_seed(1)))
    b = _zero_shot(torch.randn(4, 384, generator=torch.Generator().manual_seed(2)))
    files_a, files_b = a.to_files(), b.to_files()
    shared_a = {n for n in files_a if is_shared_file(n)}
    assert len(shared_a) == 3  # the ImageNet weight, bias and text vectors ...
    assert shared_a == {n for n in files_b if is_shared_file(n)}  # ... the same in both
    own = load_tensors(files_a[HEAD_FILE])
    assert set(own) == {"codes"} and len(files_a[HEAD_FILE]) < 8 * 1024
    assert json.loads(files_a[MODEL_JSON])["format_version"] == 2
    x = torch.randn(2, 256)
    for model, files in ((a, files_a), (b, files_b)):
        loaded = TrainedModel.from_files(files.__getitem__)
        assert torch.equal(loaded.head(x), model.head(x))


def test_artifacts_written_before_shared_tensors_still_load() -> None:
    model = _zero_shot(torch.randn(3, 384, generator=torch.Generator().manual_seed(1)))
    old = _format_1(model)
    assert json.loads(old[MODEL_JSON])["format_version"] == 1
    loaded = TrainedModel.from_files(old.__getitem__)
    x = torch.randn(2, 256)
    assert torch.equal(loaded.head(x), model.head(x))
    served = Predictor().load("old", old.__getitem__)
    assert torch.equal(served.head(x), model.head(x))
    # a model without shared tensors is written as format 1, readable by older servers
    probe = TrainedModel("linear_probe", "bb", "d", PP, ["a", "b"], LinearHead(torch.randn(2, 8), torch.zeros(2)), {})  # fmt: skip
    assert json.loads(probe.to_files()[MODEL_JSON])["format_version"] == 1
    assert set(probe.to_files()) == {MODEL_JSON, HEAD_FILE}


def test_a_shared_tensor_that_does_not_match_its_digest_is_refused() -> None:
    files = _zero_shot(torch.randn(3, 384)).to_files()
    name = next(n for n in files if is_shared_file(n))
    other = next(n for n in files if is_shared_file(n) and n != name)
    files[name] = files[other]
    with pytest.raises(ValueError, match="does not match its digest"):
        TrainedModel.from_files(files.__getitem__)
