"""The global torch settings of a training run, set and restored in one place (`torch_settings`)."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["flush_denormals", "torch_settings"]


def flush_denormals(on: bool) -> None:
    """Treats subnormal floats as zero on the CPU while training (PyTorch's default is off).

    Adam's second moments and the gradients of a converging network fill with subnormal numbers (below
    1e-38), and some CPUs compute on those through slow microcode: on the AMD EPYC of our CI machines a
    fastcnn step ran 2 to 5 times slower without this. Training loses nothing at that scale, and runs stay
    bit-for-bit repeatable (the same numbers are flushed every time).
    """
    torch.set_flush_denormal(on)


@contextlib.contextmanager
def torch_settings(*, threads: int | None = None, deterministic: bool | None = None, cudnn_benchmark: bool = False,
                   flush_denormal: bool = True, matmul_precision: str | None = None):
    """Sets torch's process-wide switches for a run and puts every one back afterwards, even on errors.

    Args:
        threads: CPU threads (`torch.set_num_threads`); None leaves them.
        deterministic: deterministic algorithms (warn-only), without deterministic mode's NaN filling of new
            tensors (about a tenth of a small CNN's step on CPU, and no part of what makes results repeatable);
            None leaves them.
        cudnn_benchmark: cuDNN autotuning (never together with deterministic).
        flush_denormal: treat subnormal floats as zero on the CPU (see `flush_denormals`).
        matmul_precision: `torch.set_float32_matmul_precision` ("highest", "high", "medium"); None leaves it.

    >>> before = torch.get_num_threads()
    >>> with torch_settings(threads=1, deterministic=True):
    ...     torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    (1, True)
    >>> torch.get_num_threads() == before, torch.are_deterministic_algorithms_enabled()
    (True, False)
    """
    saved_threads = torch.get_num_threads()
    saved_deterministic = torch.are_deterministic_algorithms_enabled()
    saved_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    saved_fill = torch.utils.deterministic.fill_uninitialized_memory
    saved_benchmark = torch.backends.cudnn.benchmark
    saved_precision = torch.get_float32_matmul_precision()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        if deterministic is not None:
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
            torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark and not deterministic)
        if matmul_precision is not None:
            torch.set_float32_matmul_precision(matmul_precision)
        flush_denormals(flush_denormal)
        yield
    finally:
        torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(saved_deterministic, warn_only=saved_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = saved_fill
        torch.backends.cudnn.benchmark = saved_benchmark
        torch.set_float32_matmul_precision(saved_precision)
        flush_denormals(False)
