"""Data-parallel training across processes (`imagegen train --ddp` under `torchrun`).

Every rank holds a full replica of the model; each takes its share of every global batch,
and gradients are averaged across ranks before every optimiser step, so the replicas take
the same steps and stay identical. The families call `opt.step()` themselves and some train
two nets, so the averaging hangs on the optimisers (a step pre-hook), not on a wrapper around
the model: no family changes, and state_dict keys stay as checkpoints and export expect.

    torchrun --nproc-per-node 2 -m imagegen.cli train --family gan --dataset mnist --epochs 3 --ddp

Rank 0 alone logs, draws grids and writes checkpoints; `Replicas` carries who is who, and a
single-process run uses `Replicas()` (rank 0 of 1), on which every helper here is a no-op.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# What torchrun sets for every worker it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Replicas:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the rank on this machine: which GPU it drives

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def join(device_name: str) -> tuple[Replicas, torch.device]:
    """Join the process group torchrun set up (its env variables) and pick this rank's
    device: gloo on CPU, nccl with one GPU per rank when CUDA is there."""
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing and not dist.is_initialized():
        raise ValueError(
            f"--ddp runs under torchrun (missing {', '.join(missing)}): "
            "torchrun --nproc-per-node 2 -m imagegen.cli train ... --ddp"
        )
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)  # nccl's collectives run on the current device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    replicas = Replicas(dist.get_rank(), dist.get_world_size(), local_rank)
    if not replicas.is_main:  # rank 0 alone reports; errors still reach stderr
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
    return replicas, device


def leave(replicas: Replicas) -> None:
    if replicas.parallel and dist.is_initialized():
        dist.barrier()  # nobody tears down while rank 0 still writes the last checkpoint
        dist.destroy_process_group()


def local_batch(global_batch: int, replicas: Replicas) -> int:
    if global_batch % replicas.world:
        raise ValueError(
            f"--batch-size {global_batch} (the global batch) must divide evenly among "
            f"{replicas.world} processes"
        )
    return global_batch // replicas.world


def shard(batch_indices: torch.Tensor, replicas: Replicas) -> torch.Tensor:
    """This rank's part of one global batch: every world-th index from its rank on, which is
    how DistributedSampler splits an epoch order; the parts together are the global batch."""
    return batch_indices[replicas.rank :: replicas.world]


def seed_noise(seed: int, replicas: Replicas) -> None:
    """Give each rank its own stream for the model's noise (z, reparameterisation): seed + rank.
    Rank 0 keeps the stream it has, so it draws what a single-process run would."""
    if replicas.rank:
        torch.manual_seed(seed + replicas.rank)


@torch.no_grad()
def copy_from_main(model: nn.Module, replicas: Replicas) -> None:
    """Rank 0's parameters and buffers on every rank, as DistributedDataParallel does at start."""
    if not replicas.parallel:
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


@torch.no_grad()
def copy_buffers_from_main(model: nn.Module, replicas: Replicas) -> None:
    """Batch-norm running statistics follow each rank's own shard, so the ranks' buffers drift
    apart (parameters do not: their gradients are averaged). Rank 0's win, as in
    DistributedDataParallel; called before sampling and checkpointing."""
    if not replicas.parallel:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def average_gradients_on_step(opts: Mapping[str, torch.optim.Optimizer], replicas: Replicas) -> None:
    """Make each optimiser average its parameters' gradients across ranks before it steps."""
    if not replicas.parallel:
        return
    for opt in opts.values():
        opt.register_step_pre_hook(lambda optimizer, args, kwargs: _average_gradients(optimizer))


@torch.no_grad()
def _average_gradients(opt: torch.optim.Optimizer) -> None:
    params = [p for group in opt.param_groups for p in group["params"]]
    if not params:
        return
    # One all-reduce for the whole optimiser: the gradients flattened, then one flag per
    # parameter saying whether this rank has a gradient for it. A missing gradient counts as
    # zero, and stays missing only if it is missing on every rank, so every rank sends the
    # same tensors (a collective of different shapes would hang) and the optimiser skips the
    # same parameters everywhere.
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has_grad = torch.tensor([float(p.grad is not None) for p in params], device=grads[0].device)
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [has_grad])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        mean = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        if p.grad is not None:
            p.grad.copy_(mean)
        else:
            p.grad = mean.clone()
    for p, anyone in zip(params, flat[offset:].tolist(), strict=True):
        if anyone == 0.0:
            p.grad = None


def mean_losses(losses: dict[str, float], replicas: Replicas) -> dict[str, float]:
    """The losses of the global batch: the mean of the ranks' losses on their equal shards."""
    if not replicas.parallel:
        return losses
    values = torch.tensor(list(losses.values()), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        values = values.cuda()
    dist.all_reduce(values)
    return dict(zip(losses, (values / replicas.world).tolist(), strict=True))


def barrier(replicas: Replicas) -> None:
    if replicas.parallel:
        dist.barrier()


def gather(value: Any, replicas: Replicas) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not replicas.parallel:
        return [value]
    values: list[Any] = [None] * replicas.world
    dist.all_gather_object(values, value)
    return values


def rng_states(replicas: Replicas) -> list[torch.Tensor]:
    """Each rank's torch RNG state (its noise stream), for the checkpoint."""
    return gather(torch.get_rng_state(), replicas)


def own_rng_state(rng: dict[str, Any], seed: int, replicas: Replicas) -> torch.Tensor:
    """This rank's noise stream from a checkpoint: its own saved state when the checkpoint
    came from as many ranks; otherwise (a single-process checkpoint, or another world size)
    rank 0 takes the saved main stream and the other ranks start from seed + rank."""
    per_rank = rng.get("ranks", [])
    if len(per_rank) == replicas.world:
        own: torch.Tensor = per_rank[replicas.rank]
        return own
    if replicas.rank == 0:
        main: torch.Tensor = rng["torch"]
        return main
    return torch.Generator().manual_seed(seed + replicas.rank).get_state()


def digest(state: Mapping[str, torch.Tensor]) -> str:
    """A fingerprint of a state dict's names and exact bytes: equal digests, equal weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def replica_record(model: nn.Module, replicas: Replicas) -> dict[str, Any]:
    """What a checkpoint keeps about the ranks: how many, and each one's weight digest."""
    return {"world_size": replicas.world, "digests": gather(digest(model.state_dict()), replicas)}


def check_replicas(record: dict[str, Any], epoch: int) -> None:
    """Stop a run whose ranks hold different weights: rank 0's checkpoint would silently
    stand for replicas that trained apart (gradients not averaged, a buffer not shared)."""
    digests = record["digests"]
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"after epoch {epoch} the {len(digests)} ranks hold different weights "
            f"(digests {[d[:12] for d in digests]}); the checkpoint keeps rank 0's"
        )
