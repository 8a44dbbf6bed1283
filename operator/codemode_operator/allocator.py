"""Keep glibc's allocator from multiplying memory across the handler threads.

glibc gives each thread that contends for malloc its own arena, up to 8 per core, and
memory freed in one arena is not reused by another. With kopf's pool of handler threads
decoding API responses at once, that fragmentation shows up as tens of MB of peak RSS.
Two arenas are plenty for an I/O-bound operator. Set in-process (mallopt) so it holds
however the operator is launched; an explicit MALLOC_ARENA_MAX in the environment wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

M_ARENA_MAX = -8  # from glibc's malloc.h
DEFAULT_ARENAS = 2


def limit_arenas(env: Mapping[str, str] | None = None, arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc malloc arenas; True when the cap was applied by this call.

    Call before threads start. A no-op (False) on a libc without mallopt (musl) or when
    the environment already sets MALLOC_ARENA_MAX, which glibc has read at start-up.
    """
    env = os.environ if env is None else env
    if "MALLOC_ARENA_MAX" in env:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
