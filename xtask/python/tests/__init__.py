"""Unit tests of the shared helpers in common/ (`cargo xtask test` runs them first)."""
