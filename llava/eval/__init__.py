"""Evaluation with lmms-eval: the plugin models, efficiency accounting, reproduction plans and tables."""
