"""Benchmarks, each a ``python -m`` script: :mod:`llava.bench.tower` (the SigLIP tower's score capture)."""
