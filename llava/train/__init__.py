"""LLaVA-NeXT-style supervised fine-tuning with AOT in the loop."""
