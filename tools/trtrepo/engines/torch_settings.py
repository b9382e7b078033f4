"""PyTorch's process-wide switches (TF32, cuDNN autotuning, the thread count, Inductor's freezing) set for the block
that needs them and put back after it: `trtrepo bench` runs several variants in one process, and what one engine
sets must not change the next one measured."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def current() -> dict[str, Any]:
    """The switches as they are now (Inductor's only where Inductor is imported: reading it would import it)."""
    import torch

    state = {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
             "cudnn_benchmark": torch.backends.cudnn.benchmark, "threads": torch.get_num_threads()}
    if "torch._inductor.config" in sys.modules:
        state["inductor_freezing"] = sys.modules["torch._inductor.config"].freezing
    return state


def _apply(state: dict[str, Any]) -> None:
    import torch

    for name, value in state.items():
        if name == "matmul_tf32":
            torch.backends.cuda.matmul.allow_tf32 = value
        elif name == "cudnn_tf32":
            torch.backends.cudnn.allow_tf32 = value
        elif name == "cudnn_benchmark":
            torch.backends.cudnn.benchmark = value
        elif name == "threads" and torch.get_num_threads() != value:
            torch.set_num_threads(value)
        elif name == "inductor_freezing":
            import torch._inductor.config

            torch._inductor.config.freezing = value


@contextmanager
def torch_settings(tf32: bool | None = None, cudnn_benchmark: bool | None = None, threads: int | None = None,
                   inductor_freezing: bool | None = None) -> Iterator[None]:
    """The switches given (None: left as they are) for the block; each gets its earlier value back afterwards."""
    wanted: dict[str, Any] = {}
    if tf32 is not None:
        wanted.update(matmul_tf32=tf32, cudnn_tf32=tf32)
    if cudnn_benchmark is not None:
        wanted["cudnn_benchmark"] = cudnn_benchmark
    if threads is not None:
        wanted["threads"] = threads
    if inductor_freezing is not None:
        import torch._inductor.config  # noqa: F401  (so that current() records its earlier value)

        wanted["inductor_freezing"] = inductor_freezing
    earlier = {name: value for name, value in current().items() if name in wanted}  # inductor's: imported above
    _apply(wanted)
    try:
        yield
    finally:
        _apply(earlier)


def with_settings(function: Callable[..., Any], **settings: Any) -> Callable[..., Any]:
    """``function`` that runs each call under torch_settings(**settings): a runner keeps its engine's switches to
    its own calls, including the compiles and recompiles that happen inside them."""

    def scoped(*args: Any, **kwargs: Any) -> Any:
        with torch_settings(**settings):
            return function(*args, **kwargs)

    return scoped
