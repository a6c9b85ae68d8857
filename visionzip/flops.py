"""Prefill FLOPs as the paper counts them (FastVID's formula, visual tokens only)."""

from __future__ import annotations


def prefill_flops(num_tokens: int, *, layers: int, hidden: int, ffn: int) -> float:
    """``L * (4 n d^2 + 2 n^2 d + 2 n d m)`` for ``n`` tokens through ``L`` layers of width ``d`` and
    FFN width ``m``. LLaVA-OV-7B (L=28, d=3584, m=18944), 32 full frames (n=6272): 40.8 TFLOPs."""
    n, d, m = num_tokens, hidden, ffn
    if min(n, layers, hidden, ffn) < 0:
        raise ValueError(
            f"prefill_flops needs non-negative sizes; got n={n}, layers={layers}, hidden={hidden}, ffn={ffn}"
        )
    return float(layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m))
