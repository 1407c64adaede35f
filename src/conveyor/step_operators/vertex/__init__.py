"""Vertex AI step operator: one CustomJob per step attempt (light package: the SDK loads in operator.py only)."""
