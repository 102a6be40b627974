"""glibc malloc of a serving process, set so that memory freed after a request goes back to
the system.

glibc's defaults keep what concurrent predicts free: every thread that allocates while
another holds an arena gets an arena of its own (up to 8 per core), and the mmap threshold
rises to the largest block freed so far (up to 32 MiB), after which activation-sized
buffers come from the arenas' heaps, which give memory back only from their top. Here: a
fixed mmap threshold (blocks from it up are mapped, and unmapped when freed; setting it
also stops the dynamic rise), a cap on arenas, and :func:`release` (``malloc_trim(0)``:
the free pages inside every arena back to the system) once inference goes idle. Other C
libraries (musl, macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import sys

_M_MMAP_THRESHOLD = -3  # mallopt parameters, <malloc.h>
_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def tune(*, mmap_threshold: int, arena_max: int) -> bool:
    """Fix glibc's mmap threshold at ``mmap_threshold`` bytes and cap its arenas at
    ``arena_max`` (0 leaves either as it is). False where the C library is not glibc."""
    if _LIBC is None:
        return False
    if mmap_threshold:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    if arena_max:
        _LIBC.mallopt(_M_ARENA_MAX, arena_max)
    return True


def release() -> None:
    """Return the free pages of every malloc arena to the system (``malloc_trim(0)``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
