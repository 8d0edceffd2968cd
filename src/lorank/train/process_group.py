"""End a torchrun job cleanly: all ranks meet, then the process group is torn down.

Without it, a rank that leaves while another still talks to it can abort at exit (gloo: ``terminate called
without an active exception``, exit code -6, seen on CI about 1 run in 8), and NCCL warns that the group was
never destroyed. ``lorank train`` calls it when training is over; a script that drives ``lorank.train()`` under
torchrun calls it itself, once it has done its own collectives."""
from __future__ import annotations

import torch.distributed as dist


def is_main_process() -> bool:
    """True outside a distributed job, and on global rank 0 inside one."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def end_process_group() -> bool:
    """Barrier then ``destroy_process_group()`` when a default group exists; returns whether there was one."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.barrier()
    dist.destroy_process_group()
    return True
