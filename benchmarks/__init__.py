"""Benchmarks of this repository, each a ``python -m`` script run from the repository root:
:mod:`benchmarks.compression` (the compression step against its floor), :mod:`benchmarks.tower` (the
SigLIP tower's score capture) and :mod:`benchmarks.e2e` (whole stacks: tower, compression, prefill,
time to first token). They use :mod:`visionzip` and :mod:`llava`; neither imports them, and the wheel
ships none of them."""
