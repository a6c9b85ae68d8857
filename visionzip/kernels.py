"""The one switch between each stage's reference implementation and its faster path.

Every stage of the compression math has one reference implementation, the straightforward math
(for AOT's intra stage: merge the pruned tokens into the anchors, then the model's pooling). A stage
keeps a faster path only where it pays on the device it targets; today that is AOT's intra stage
(:mod:`visionzip.intra`): on a CPU in float32 with a linear pooling it forms each frame's kept pooled
cells by one product over them (:func:`visionzip.intra.kept_cells`) instead of pooling the whole
merged frames, and without autograd it builds the merge's weights in place on one map.

Fast paths are on by default. Inside ``with visionzip.reference_kernels():`` every stage runs its
reference implementation; tests check that both give the same tokens (float32: within 1e-5 relative,
tests/test_chunking.py), the same masks and, with either setting, golden parity. A
:class:`~visionzip.ReductionPlan` replays its reduction bit for bit under the setting it was made with.
The setting is per thread and per ``asyncio`` task (a :class:`contextvars.ContextVar`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_FAST = ContextVar("visionzip_fast_kernels", default=True)


@contextmanager
def reference_kernels() -> Iterator[None]:
    """Run every stage's reference implementation inside the ``with`` block (no faster path)."""
    token = _FAST.set(False)
    try:
        yield
    finally:
        _FAST.reset(token)


def fast_kernels_enabled() -> bool:
    """Whether stages may take their faster path (True unless inside :func:`reference_kernels`)."""
    return _FAST.get()
