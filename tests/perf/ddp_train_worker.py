"""Run under torchrun by tests/perf/test_ddp_train.py: ``lorank.train`` under 2-process gloo DDP on CPU.

Checks that the ranks formed one DDP job (the trainer saw a DistributedDataParallel model) and ended with identical trainable weights; rank 0 writes the evidence as JSON."""
import json
import sys

import torch
import torch.distributed as dist

import lorank
from lorank.train import trainer as trainer_mod
from lorank.train.config import TrainConfig
from lorank.train.process_group import end_process_group


def main() -> None:
    cfg, out = sys.argv[1], sys.argv[2]
    seen: dict = {}
    real_step = trainer_mod.RerankTrainer.training_step

    def spy(self, model, inputs, num_items_in_batch=None):
        seen["model"] = model
        return real_step(self, model, inputs, num_items_in_batch)

    trainer_mod.RerankTrainer.training_step = spy
    res = lorank.train(TrainConfig.from_yaml(cfg), progress=False)
    assert dist.is_initialized(), "no process group: not a distributed run"
    world, rank = dist.get_world_size(), dist.get_rank()
    model = seen["model"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    mine = torch.tensor([sum(float(p.detach().double().abs().sum()) for p in trainable)], dtype=torch.float64)
    sums = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(sums, mine)
    if rank == 0:
        json.dump({"world_size": world, "backend": str(dist.get_backend()), "model_class": type(model).__name__,
                   "steps": res.steps, "weight_sums": [float(s) for s in sums],
                   "checkpoints": [c.name for c in res.checkpoints]}, open(out, "w"))
    # Leaving without this let rank 1 exit while rank 0 was still writing: gloo aborted it at exit
    # ("terminate called without an active exception") in about 1 run in 8.
    assert end_process_group() and not dist.is_initialized()


if __name__ == "__main__":
    main()
