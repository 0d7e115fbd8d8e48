import os

# Tests run on the CPU with deterministic XLA; a GPU, when present, is exercised by benchmarks.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def run_with_devices(code: str, out, devices: int, timeout: float = 600):
    """Run `code` (given the output path as argv[1]) in a fresh Python whose CPU is split into
    `devices` XLA devices (--xla_force_host_platform_device_count); the child's stderr on failure."""
    import subprocess
    import sys
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
