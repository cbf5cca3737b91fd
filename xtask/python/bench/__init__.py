"""Benchmark drivers: mlx-lm's side of the comparisons, the server's
throughput (see ../README.md)."""
