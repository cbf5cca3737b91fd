"""Tools for the CUDA machine: our 4-bit kernel's checks, timings and SASS
counts, probes of MLX's CUDA backend (see ../README.md)."""
