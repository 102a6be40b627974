"""Rotation pretraining on a domain far from ImageNet: UCI 8x8 digits, upscaled to 32 px.

    python -m bench.pretrain_rotation [--unlabeled 300] [--labeled 5] [--epochs 2] [--seeds 0 1]

``pretrain`` learns ``resnet10t`` from ``--unlabeled`` unlabeled digits (labels ignored);
then a linear probe (standardised features, logistic regression) is trained on
``--labeled`` labeled digits per class and measured on 500 further digits, once on the
pretrained backbone (loaded through the backbones registry as a learned backbone) and once
on the same architecture randomly initialised with the same seed and preprocessing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.transfer.backbones import learned_spec, load_backbone, set_learned_lookup
from app.transfer.data import TrainingData
from app.transfer.methods import get_method
from app.transfer.methods.pretrain import PretrainParams


def compare(
    *, unlabeled: int, labeled_per_class: int, epochs: int, seed: int, n_test: int = 500
) -> dict[str, float]:
    """Rotation accuracy of ``pretrain`` and probe accuracies on pretrained vs random."""
    digits = load_digits()
    images = np.kron((digits.images * 255 / 16).astype(np.uint8), np.ones((1, 4, 4), np.uint8))
    order = np.random.default_rng(seed).permutation(len(images))
    unl, rest = order[:unlabeled], order[unlabeled:]
    lab = np.concatenate([rest[digits.target[rest] == c][:labeled_per_class] for c in range(10)])
    test = np.setdiff1d(rest, lab)[:n_test]
    data = TrainingData.from_arrays([images[i] for i in unl], [None] * len(unl))
    started = time.monotonic()
    trained = get_method("pretrain").fit(data, PretrainParams(epochs=epochs, seed=seed))
    seconds = time.monotonic() - started
    arch, cfg = trained.params["architecture"], trained.preprocessing
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "learned.safetensors"
        save_file(trained.backbone_state, str(path))  # type: ignore[arg-type]
        spec = learned_spec("learned", architecture=arch, weights_file=path,
                            preprocessing=cfg, description="bench")  # fmt: skip
        set_learned_lookup(lambda name: spec if name == "learned" else None)
        try:
            pretrained = load_backbone("learned").model
        finally:
            set_learned_lookup(lambda name: None)
    torch.manual_seed(seed)
    random = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    x = torch.from_numpy(images).float()[:, None].repeat(1, 3, 1, 1) / 255
    x = (x - torch.tensor(cfg.mean)[:, None, None]) / torch.tensor(cfg.std)[:, None, None]
    out = {"rotation_accuracy": trained.metrics["rotation_accuracy"], "pretrain_s": seconds}
    for name, model in (("pretrained", pretrained), ("random", random)):
        with torch.no_grad():
            feats = model(x).numpy()
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        probe.fit(feats[lab], digits.target[lab])
        out[name] = float(probe.score(feats[test], digits.target[test]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--unlabeled", type=int, default=300)
    parser.add_argument("--labeled", type=int, default=5, help="labeled digits per class")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    print("seed  rotation acc  probe pretrained  probe random  pretrain s")
    for seed in args.seeds:
        r = compare(unlabeled=args.unlabeled, labeled_per_class=args.labeled,
                    epochs=args.epochs, seed=seed)  # fmt: skip
        print(f"{seed:>4}  {r['rotation_accuracy']:>12.3f}  {r['pretrained']:>16.3f}  "
              f"{r['random']:>12.3f}  {r['pretrain_s']:>10.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
