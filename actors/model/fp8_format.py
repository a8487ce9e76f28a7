"""The E4M3 block format that the FP8 recipe (fp8.py) and its Triton kernels (fp8_kernels.py) share: tile size,
range and the floor under a tile's amax. No imports, so both sides read one definition."""

BLOCK = 128
"""Tile edge: 1x128 tiles for activations and gradients, 128x128 blocks for weights."""
E4M3_MAX = 448.0
"""The largest finite float8_e4m3fn value."""
AMAX_FLOOR = 1e-12
"""An all-zero tile gets this amax: its scale stays finite and its values quantise to 0."""
