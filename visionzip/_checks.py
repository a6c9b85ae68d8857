"""Input checks shared by the public functions: every failure names the argument, the value and what
was expected, so bad input never surfaces as a shape error deep inside torch."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .ops import token_norms


def check_tensor(
    name: str,
    value: object,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    floating: bool = False,
) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} has shape {tuple(value.shape)} (rank {value.dim()}); expected rank {want}")
    if shape is not None:
        if value.dim() != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ValueError(f"{name} has shape {tuple(value.shape)}; expected {want}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} has dtype {value.dtype}; expected a floating-point tensor")
    return value


def check_finite(name: str, value: torch.Tensor) -> None:
    if not value.is_floating_point() or value.numel() == 0:
        return
    # Fast path: one reduction (a NaN or inf anywhere makes the sum non-finite); the exact count
    # is taken only when it is not, which also tells a real bad value from a mere overflow.
    if bool(torch.isfinite(value.sum())):
        return
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or inf value(s); expected finite values")


def checked_token_norms(name: str, features: torch.Tensor) -> torch.Tensor:
    """(..., N) float32 norms of the tokens of ``features`` (..., N, D), accumulated in at least
    float32, after checking that every value is finite: the norms are that check's one pass (a NaN or
    inf anywhere makes its token's norm non-finite; the exact count is taken only then)."""
    norms = token_norms(features)
    if features.numel() and not bool(torch.isfinite(norms).all()):
        check_finite(name, features)
    return norms


def check_grid(grid: object, n: int, *, name: str = "grid", what: str = "N") -> tuple[int, int]:
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 2
        or not all(isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid)
    ):
        raise ValueError(f"{name}={grid!r} is not valid; expected a pair of positive ints (H, W)")
    h, w = int(grid[0]), int(grid[1])
    if h * w != n:
        raise ValueError(f"{name}={(h, w)} does not match {what}={n} tokens per frame; expected H*W == {n}")
    return h, w


def check_mask(name: str, mask: object, shape: Sequence[int]) -> torch.Tensor:
    check_tensor(name, mask, shape=shape)
    assert isinstance(mask, torch.Tensor)
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise ValueError(f"{name} has dtype {mask.dtype}; expected a bool (or 0/1 integer) mask")
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(f"{name} has values other than 0 and 1; expected a 0/1 mask")
        mask = mask != 0
    return mask


def check_ratio(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} is not valid; expected a number in [0, 1]")
    return float(value)


def check_choice(name: str, value: object, enum: type) -> object:
    """``enum(value)``, or a ValueError naming the argument and listing the choices."""
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum)
        raise ValueError(f"{name}={value!r} is not valid; expected one of {choices}") from None
