"""Test configuration: float64 available in JAX (tests pick their dtype explicitly), and one intra-op thread per
process when the tests run in parallel (``pytest -n 2``, the default run): torch's and XLA's thread pools spin when
another process competes for the cores, which made one eager update 25× slower beside a second worker. Subprocesses
the tests start inherit the same limits."""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
