"""Serving this project's reductions through vLLM: a general plugin (entry point ``vllm.general_plugins``)
that registers AOT-capable subclasses of vLLM's own model classes, switched on per model with
``--hf-overrides '{"aot": "<spec>"}'`` (docs/vllm.md). Imported only inside vLLM's environment
(``.venv-vllm``, scripts/setup_vllm.sh)."""
