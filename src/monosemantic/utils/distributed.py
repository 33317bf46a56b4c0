"""torch.distributed plumbing shared by every stage: one process is world size 1, same code.

Launch with `torchrun --nproc-per-node N -m monosemantic VERB CONFIG`: torchrun sets RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT, and `init()` joins the process group (gloo on CPU,
nccl on CUDA). Without torchrun nothing is initialised and every helper here degrades to the
single-process answer (rank 0 of 1, collectives are identities), so the code path is the same.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device: str | None = None) -> None:
    """Join the process group torchrun describes; a no-op in a single process or when joined."""
    if active() or not launched():
        return
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith(("cuda", "auto")))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    if dist.get_rank() != 0:  # one rank speaks: progress bars and messages come from rank 0
        from .progress import console

        console.quiet = True


@contextmanager
def session(device: str | None = None) -> Iterator[None]:
    """`init` on entry and a clean `destroy` on exit (also after an error, so no rank hangs)."""
    init(device)
    try:
        yield
        barrier()  # no rank leaves while another still writes
    finally:
        if active():
            dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def is_main() -> bool:
    """Only rank 0 prints and writes shared files (manifests, exported checkpoints)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce(x: Tensor, op: str = "sum", group: dist.ProcessGroup | None = None) -> Tensor:
    """In-place all-reduce (sum, max or min) across `group`; the identity in one process."""
    if active() and dist.get_world_size(group) > 1:
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(x, op=ops[op], group=group)
    return x


def all_gather(x: Tensor, group: dist.ProcessGroup | None = None) -> list[Tensor]:
    """Every rank's `x` (same shape on every rank), in rank order."""
    if not active() or dist.get_world_size(group) == 1:
        return [x]
    out = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, x.contiguous(), group=group)
    return out


def all_gather_varlen(x: Tensor, group: dist.ProcessGroup | None = None) -> list[Tensor]:
    """Every rank's `x` when the first dimension differs between ranks."""
    if not active() or dist.get_world_size(group) == 1:
        return [x]
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [int(s) for s in all_gather(n, group)]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    return [p[:s] for p, s in zip(all_gather(padded, group), sizes, strict=True)]


def split_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """[lo, hi) of part `index` when n items are cut into `parts` contiguous near-equal parts."""
    base, extra = divmod(n, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)
