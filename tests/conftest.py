import os

# Tests run on the CPU with deterministic XLA; a GPU, when present, is exercised by benchmarks.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
