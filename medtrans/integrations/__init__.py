"""Integrations with other tools (imported on demand: their dependencies are not medtrans's)."""
