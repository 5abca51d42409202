import os

# Tests run on CPU with float32 by default; individual tests enable x64 locally.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
