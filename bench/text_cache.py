"""ImageNet's class-text embeddings: a new data directory's first zero-shot job, before and
after the installation-wide cache (``DOVECOTE_SHARED_CACHE_DIR``).

In-process, the bundled all-MiniLM-L6-v2: seconds of ``imagenet_embeddings`` for a first data
directory (nothing cached anywhere: the 1000 names are embedded), then for a second data
directory in a fresh process state, once with the data-dir cache only (as before: embedded
again) and once with the shared cache first (read back).

    python -m bench.text_cache
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from app.transfer import text
from bench._common import machine


def timed(dirs: list[Path], location: str) -> float:
    text._imagenet_cache.clear()  # a new process
    t = time.perf_counter()
    text.imagenet_embeddings(location, ("a photo of a {}.",), False, dirs)
    return time.perf_counter() - t


def main() -> None:
    location = text.resolve_text_encoder()
    text.sentence_encoder(location)  # the encoder's load is not what is measured
    print(f"# ImageNet text embeddings per data dir; {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = timed([root / "shared", root / "data-1"], location)
        before = timed([root / "data-2"], location)
        after = timed([root / "shared", root / "data-3"], location)
    print(f"first data dir (embeds the 1000 names)      {first:7.2f} s")
    print(f"second data dir, data-dir cache only        {before:7.2f} s   (before)")
    print(f"second data dir, installation cache first   {after:7.3f} s   (after)")


if __name__ == "__main__":
    main()
