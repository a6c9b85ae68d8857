"""LLaVA-NeXT-compatible model stack with AOT compression at one seam (after the projector)."""
