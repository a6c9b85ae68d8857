"""Batched entropic optimal transport (Sinkhorn scaling) as AOT uses it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ._checks import check_finite, check_tensor


@dataclass
class SinkhornResult:
    """Outcome of :func:`sinkhorn`.

    plan:        (B, n, m) float32, ``diag(u) K diag(v)``
    u, v:        (B, n), (B, m) the scalings
    iterations:  (G,) iterations run by each stopping group
    converged:   (G,) whether each group met its stopping rule before ``max_iter``
    """

    plan: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    # Absent entries (zero marginal) and entries facing only absent ones (zero denominator) get
    # scaling 0, never 0/0 or b/0: a frame with no pruned token, say, yields a zero plan.
    # The divisor is made 1 where the result is discarded: num / 0 there would give a NaN gradient
    # through torch.where (0 * inf) although its value is never used.
    keep = (num > 0) & (den > 0)
    return torch.where(keep, num / torch.where(keep, den, torch.ones_like(den)), torch.zeros_like(num))


def sinkhorn(
    kernel: torch.Tensor,
    row_marginal: torch.Tensor,
    col_marginal: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-2,
    groups: torch.Tensor | None = None,
    stop: str = "paper",
    warn: bool = True,
    check: bool = True,
    overwrite: bool = False,
) -> SinkhornResult:
    """Solve ``min <T, C> - eps H(T)`` s.t. ``T 1 = a, T^T 1 = b`` from the kernel ``K = exp(-C/eps)``.

    Shapes: ``kernel`` (B, n, m) or (n, m); ``row_marginal`` a (B, n); ``col_marginal`` b (B, m).
    Computed in float32 whatever the input dtype. Rows or columns whose marginal is 0 are treated as
    absent (padding): their scaling is 0 and they do not enter the stopping rule.

    Iteration (the release's): ``u = 1, v = 1``; repeat ``u_prev = u; u = a / (K v); v = b / (K^T u)``
    and stop after the iteration whose error is below ``tol``:

    - ``stop="paper"``: error = mean |u - u_prev| over the present rows of the group;
    - ``stop="marginal"``: error = sum |u * (K v) - a| / sum a, the relative row-marginal violation.

    ``groups`` (B,) int64 assigns each problem to a stopping group (ids 0..G-1): a group stops as a
    whole and is frozen while others continue, so no group's result depends on another's. ``None``
    puts all B problems in one group, as the release does for the frames of one video.

    Convergence is read on the host after every iteration on a CPU, and on an accelerator only after
    iterations 2, 3 and every 4th after that (a group that has stopped is frozen on the device
    meanwhile, so the result is that of stopping at once).
    ``check=False`` skips the input validation (for callers that built the inputs themselves).
    ``overwrite=True`` lets the plan be formed in place on a float32 ``kernel`` (same values; the
    caller no longer needs the kernel).
    """
    if not check:
        return _solve(
            kernel, row_marginal, col_marginal, max_iter=max_iter, tol=tol, groups=groups, stop=stop, warn=warn,
            overwrite=overwrite,
        )
    check_tensor("kernel", kernel, ndim=(2, 3), floating=True)
    squeeze = kernel.dim() == 2
    want = (kernel.shape[-2],) if squeeze else kernel.shape[:2]
    check_tensor("row_marginal", row_marginal, shape=tuple(want), floating=True)
    want = (kernel.shape[-1],) if squeeze else (kernel.shape[0], kernel.shape[2])
    check_tensor("col_marginal", col_marginal, shape=tuple(want), floating=True)
    given = (kernel, row_marginal, col_marginal)
    if squeeze:
        kernel, row_marginal, col_marginal = kernel[None], row_marginal[None], col_marginal[None]
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} is not valid; expected an integer >= 1")
    if not tol > 0:
        raise ValueError(f"tol={tol!r} is not valid; expected a number > 0")
    if stop not in ("paper", "marginal"):
        raise ValueError(f"stop={stop!r} is not valid; expected 'paper' or 'marginal'")
    for name, value in (("kernel", kernel), ("row_marginal", row_marginal), ("col_marginal", col_marginal)):
        check_finite(name, value)
        if bool((value < 0).any()):
            raise ValueError(f"{name} has negative entries (min {float(value.min()):.3g}); expected values >= 0")
    if groups is not None:
        check_tensor("groups", groups, shape=(kernel.shape[0],))
    return _solve(*given, max_iter=max_iter, tol=tol, groups=groups, stop=stop, warn=warn, overwrite=overwrite)


def _solve(
    kernel: torch.Tensor,
    row_marginal: torch.Tensor,
    col_marginal: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    groups: torch.Tensor | None,
    stop: str,
    warn: bool,
    overwrite: bool = False,
) -> SinkhornResult:
    squeeze = kernel.dim() == 2
    if squeeze:
        kernel, row_marginal, col_marginal = kernel[None], row_marginal[None], col_marginal[None]
    b_ = kernel.shape[0]
    K = kernel.float()
    a = row_marginal.float()
    b = col_marginal.float()
    device = K.device
    if groups is None:
        groups = torch.zeros(b_, dtype=torch.long, device=device)
        num_groups = 1
    else:
        groups = groups.to(device=device, dtype=torch.long)
        num_groups = int(groups.max()) + 1 if b_ else 0

    row_present = a > 0  # (B, n)
    # Rows counted by each group's mean (paper) and the group's total mass (marginal).
    count = torch.zeros(num_groups, device=device).index_add_(0, groups, row_present.sum(-1).float())
    mass = torch.zeros(num_groups, device=device).index_add_(0, groups, a.sum(-1))

    # The release starts from u = 1, v = 1; absent entries start (and stay) at 0.
    u = row_present.float()
    v = (b > 0).float()
    active = torch.ones(num_groups, dtype=torch.bool, device=device)
    iterations = torch.zeros(num_groups, dtype=torch.long, device=device)
    on_cpu = device.type == "cpu"
    # Products as multiply-and-reduce rather than batched matrix-vector calls: each problem's
    # arithmetic is then the same whatever else is in the batch (bit-identical alone or batched).
    # without autograd the elementwise products go to one reused buffer (same values, no fresh map per step)
    grad = torch.is_grad_enabled() and (K.requires_grad or a.requires_grad or b.requires_grad)
    buf = None if grad else torch.empty_like(K)

    def times(scale: torch.Tensor) -> torch.Tensor:
        return K * scale if buf is None else torch.mul(K, scale, out=buf)

    for it in range(max_iter):
        u_new = _safe_div(a, times(v[:, None, :]).sum(-1))  # (B, n)
        v_new = _safe_div(b, times(u_new[:, :, None]).sum(1))  # (B, m)
        if stop == "paper":
            err = ((u_new - u).abs() * row_present).sum(-1)
            err = torch.zeros(num_groups, device=device).index_add_(0, groups, err) / count.clamp_min(1)
        else:
            viol = (u_new * times(v_new[:, None, :]).sum(-1) - a).abs().sum(-1)
            err = torch.zeros(num_groups, device=device).index_add_(0, groups, viol) / mass.clamp_min(1e-30)
        live = active[groups]  # (B,) problems still iterating
        u = torch.where(live[:, None], u_new, u)
        v = torch.where(live[:, None], v_new, v)
        iterations += active.long()
        active = active & ~(err < tol)
        done = it + 1
        # on a CPU the flag is read after every iteration (a host read costs nothing there); on an
        # accelerator after iterations 2, 3 and every 4th, a few syncs per call
        if (on_cpu or done in (2, 3) or done % 4 == 0) and not bool(active.any()):
            break
    converged = ~active
    if warn and stop == "marginal" and not bool(converged.all()):
        warnings.warn(
            f"sinkhorn: {int((~converged).sum())} of {num_groups} group(s) did not reach "
            f"tol={tol} within max_iter={max_iter}",
            RuntimeWarning,
            stacklevel=2,
        )
    # in place on K (the caller's, or a float32 copy): (K * u) * v is (u * K) * v bit for bit
    if overwrite or K is not kernel:
        plan = K.mul_(u.unsqueeze(-1)).mul_(v.unsqueeze(-2))
    else:
        plan = u.unsqueeze(-1) * K * v.unsqueeze(-2)
    if squeeze:
        plan, u, v = plan[0], u[0], v[0]
    return SinkhornResult(plan=plan, u=u, v=v, iterations=iterations, converged=converged)
