"""Zero-shot models' cost: predictor memory per cached model (RSS growth over ``--models``
loaded models), and stored artifact bytes per model before and after shared tensors.

Each model is a ConSE zero-shot artifact shaped like a real one on efficientnet_lite0
(ImageNet classifier 1000x1280 + bias, ImageNet text vectors 1000x384, 5 classes of its
own), the ImageNet parts identical across models as they are in practice. Loaded through
``Predictor.load`` from serialized artifacts (safetensors), as the API does; ``--no-share``
turns the predictor's :class:`SharedTensors` off, as before it existed. Artifact bytes:
format 1 (every tensor in the model's own ``head.safetensors``, as before) against format 2
(the model's own tensors; the ImageNet classifier and text vectors once per installation,
``shared-tensors/<sha256>``), as a blob store holds them after ``--models`` models.

    python -m bench.model_memory [--models 200] [--no-share]
"""

from __future__ import annotations

import argparse
import gc
from functools import lru_cache

import torch

from app.transfer.artifacts import TrainedModel, is_shared_file
from app.transfer.heads import ConSEHead
from app.transfer.predictor import Predictor
from app.transfer.preprocess import Preprocessing
from bench.predict_memory import rss_mib


@lru_cache(maxsize=1)
def imagenet_parts() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ImageNet classifier and text vectors, the same in every model (made once)."""
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(1000, 1280, generator=g), torch.randn(1000, generator=g)
    return weight, bias, torch.randn(1000, 384, generator=g)


def artifact(i: int) -> dict[str, bytes]:
    weight, bias, source = imagenet_parts()
    codes = torch.randn(5, 384, generator=torch.Generator().manual_seed(i + 1))
    head = ConSEHead(weight, bias, source, codes, top_t=10, temperature=0.1)
    pp = Preprocessing((3, 224, 224), "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    classes = [f"c{j}" for j in range(5)]
    return TrainedModel("zero_shot", "efficientnet_lite0", "d", pp, classes, head, {}).to_files()


def stored_bytes(n_models: int) -> None:
    """Blob-store bytes of ``n_models`` zero-shot artifacts, before and after sharing."""
    own: list[int] = []
    shared: dict[str, int] = {}
    before: list[int] = []
    for i in range(n_models):
        files = artifact(i)
        own.append(sum(len(d) for n, d in files.items() if not is_shared_file(n)))
        shared.update({n: len(d) for n, d in files.items() if is_shared_file(n)})
        if i == 0:  # format 1: the same model with nothing shared
            head = TrainedModel.from_files(files.__getitem__)
            head.head.shared_buffers = ()  # type: ignore[misc]
            before.append(sum(len(d) for d in head.to_files().values()))
    per_before, per_own, once = before[0], sum(own) / n_models, sum(shared.values())
    print(f"stored per zero-shot model: {per_before / 1024:.0f} KiB before (format 1), "
          f"{per_own / 1024:.1f} KiB now, plus {once / 1024:.0f} KiB in {len(shared)} shared "
          f"tensors stored once; {n_models} models: {n_models * per_before / 2**20:.1f} MiB "
          f"-> {(sum(own) + once) / 2**20:.2f} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--no-share", action="store_true", help="as before SharedTensors")
    args = parser.parse_args()
    stored_bytes(args.models)
    predictor = Predictor(max_heads=args.models)
    if args.no_share:
        predictor.shared.min_bytes = 1 << 62
    files = artifact(0)  # serialized once; each model below is a fresh copy of its tensors
    gc.collect()
    before, _ = rss_mib(__import__("os").getpid())
    for i in range(args.models):
        own = dict(files) if i == 0 else artifact(i)
        predictor.load(f"m{i}", own.__getitem__)
        del own
    gc.collect()
    after, _ = rss_mib(__import__("os").getpid())
    storages: dict[int, int] = {}
    for model in predictor.models._data.values():
        for t in model.head.buffers():
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    held = sum(storages.values()) / 1024
    print(f"{args.models} zero-shot models, sharing {'off' if args.no_share else 'on'}: "
          f"head tensors held {held / 1024:.1f} MiB ({held / args.models:.0f} KiB per model); "
          f"RSS +{after - before:.0f} MiB (allocator included)")  # fmt: skip


if __name__ == "__main__":
    main()
