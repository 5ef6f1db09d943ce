"""Two CPU ranks (gloo): DDP steps equal single-process full-batch steps; DTensor Newton–Schulz gathers."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from optim_helpers import TinyNet, batches, loss_fn

from hope.optim import build_optimizer, newton_schulz, orthogonalize

NAMES = ("m3", "dgd", "muon")
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(model, name, data, rank=0, world=1):
    opt = build_optimizer(name, model, lr=0.01)
    for ids, targets in data:
        opt.zero_grad()
        loss_fn(model, ids.chunk(world)[rank], targets.chunk(world)[rank]).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name in NAMES:
            model = TinyNet()
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            results[name] = _train(ddp, name, batches(4, batch=4), rank, WORLD)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (WORLD,))
        M = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        sharded = distribute_tensor(M, mesh, [Shard(0)])
        O = orthogonalize(sharded, 5, "quintic")
        results["dtensor_local"] = O.to_local()
        results["dtensor_full"] = O.full_tensor()
        torch.save(results, f"{out}.{rank}")
        del ddp, sharded, O
        # Neither rank may tear gloo down while the other still talks to it (seen: SIGABRT at exit).
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built")
def test_ddp_and_fsdp_shards_match_single_process(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]
    for name in NAMES:
        # Grads are averaged over ranks and DGD's input statistics are summed, so two half batches equal one.
        expected = _train(TinyNet(), name, batches(4, batch=4))
        for r in range(WORLD):
            torch.testing.assert_close(
                ranks[r][name], expected, atol=1e-10, rtol=1e-8, msg=lambda m, name=name: f"{name}: {m}"
            )
    M = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = newton_schulz(M.reshape(6, 6), 5, "quintic").reshape(6, 2, 3)
    torch.testing.assert_close(ranks[0]["dtensor_full"], full, atol=1e-12, rtol=0)
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r]["dtensor_local"], full[3 * r : 3 * (r + 1)], atol=1e-12, rtol=0)
