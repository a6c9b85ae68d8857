"""The baselines behind AOT's interface, one module each: its config class, its compress (or select)
function and one :func:`~visionzip.registry.register_method` call. Importing this package imports
every module in it, so a new built-in baseline is one module here plus a preset YAML.

Every method here works on the **model's grid**: each frame's tokens are first pooled exactly as
the model does (its :class:`visionzip.VideoLayout`; the attention-score maps pooled with the same
arithmetic), so that every method gets the same frames and the same ``n = h*w`` tokens per frame,
and retention is counted as the paper does: ``(T - newlines) / (F * n)``. Where a paper acts before
pooling (VisionZip inside the vision tower, DyCoke and FastVID on LLaVA-OneVision's pooled tokens
already) this is a departure only for VisionZip; it is named in each method's docstring.

Budgets are exact: a video of ``F`` frames gets ``B = round(retention * F * n)`` tokens, newlines
excluded (``pool``: uniform grids of two sizes around the target, within half their difference of
the budget per video, see :func:`~visionzip.baselines.pool.pool_grids_for`). How ``B`` is spread
follows each paper: evenly over frames (random, VisionZip; earlier frames take the remainder),
globally over the video (DyCoke), over dynamic segments in proportion to their frames (FastVID).

:mod:`visionzip.baselines.grid` holds what they share: the fields every baseline's config has,
:class:`~visionzip.baselines.grid.Selection` and :func:`~visionzip.baselines.grid.compress_on_grid`,
which turns a select function on the pooled grid into a method's ``compress``.
"""

from __future__ import annotations

import importlib
import pkgutil

from .grid import BaselineConfig, Selection, compress_on_grid, with_retention

__all__ = ["BaselineConfig", "Selection", "compress_on_grid", "with_retention"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "grid" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")  # each registers its method
