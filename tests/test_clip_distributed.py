"""Distributed clipping: 2 gloo processes on CPU agree with a single-process run."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import steadystep.torch as sst  # noqa: E402

from ._subprocess import free_port, run_workers  # noqa: E402

WORKER = textwrap.dedent(
    """
    import json, math, os, sys
    import torch
    import torch.distributed as dist
    import steadystep.torch as sst

    rank, port = int(sys.argv[1]), int(sys.argv[2])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

    def full_grads():
        g = torch.Generator().manual_seed(0)
        return [torch.randn(4, 3, generator=g), torch.randn(5, generator=g),
                torch.randn(6, 2, generator=g), torch.randn(3, generator=g)]

    out = {}
    for p_name, p in (("l2", 2.0), ("inf", math.inf), ("l1", 1.0)):
        # DDP: gradients already averaged, identical on every rank -> local norm, no reduce
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in full_grads()]
        for q, g in zip(params, full_grads()):
            q.grad = g
        res = sst.clip_grad_norm_(params, 0.5, p, return_result=True)
        out[f"ddp_{p_name}"] = [float(res.norm), float(res.coefficient)]

        # pipeline: rank 0 owns tensors 0-1, rank 1 owns 2-3; a tied tensor lives on both
        grads = full_grads()
        tied = torch.nn.Parameter(torch.zeros(2))
        tied.grad = torch.tensor([0.5, -1.5])
        own = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads[2 * rank: 2 * rank + 2]]
        for q, g in zip(own, grads[2 * rank: 2 * rank + 2]):
            q.grad = g
        res = sst.clip_grad_norm_(own + [tied], 0.5, p, process_group=dist.group.WORLD,
                                  duplicates=[tied] if rank == 1 else (), return_result=True)
        out[f"pipe_{p_name}"] = [float(res.norm), float(res.coefficient)]
        out[f"pipe_{p_name}_tied"] = tied.grad.tolist()

        # FSDP2-style DTensor gradients: Shard(0) on a 1-D mesh, plus a replicated one
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Replicate, Shard, distribute_tensor
        mesh = init_device_mesh("cpu", (2,))
        dparams = []
        for i, g in enumerate(full_grads()):
            placement = [Replicate()] if i == 1 else [Shard(0)]
            q = torch.nn.Parameter(distribute_tensor(torch.zeros_like(g), mesh, placement))
            q.grad = distribute_tensor(g, mesh, placement)
            dparams.append(q)
        res = sst.clip_grad_norm_(dparams, 0.5, p, return_result=True)
        out[f"fsdp_{p_name}"] = [float(res.norm), float(res.coefficient)]
        out[f"fsdp_{p_name}_grads"] = [q.grad.full_tensor().flatten().tolist() for q in dparams]
    # power sums that cross processes: norms whose fp32 squares over- or underflow
    for name, value in (("huge", 3e19), ("tiny", 1e-25)):
        own = torch.nn.Parameter(torch.zeros(4))
        own.grad = torch.full((4,), value * (rank + 1))
        out[name] = float(sst.clip_grad_norm_([own], 1.0, process_group=dist.group.WORLD))
        full = torch.cat([torch.full((4,), value), torch.full((4,), 2 * value)])
        q = torch.nn.Parameter(distribute_tensor(torch.zeros(8), mesh, [Shard(0)]))
        q.grad = distribute_tensor(full, mesh, [Shard(0)])
        out[name + "_dtensor"] = float(sst.clip_grad_norm_([q], 1.0))
    # a real FSDP2 model: fully_shard per layer and at the root, each rank its own batch
    from torch.distributed.fsdp import fully_shard
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    for module in (model[0], model[2], model):
        fully_shard(module, mesh=mesh)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1 + rank))
    model(x).pow(2).sum().backward()
    res = sst.clip_grad_norm_(model.parameters(), 0.5, return_result=True)
    out["fully_shard"] = [float(res.norm), float(res.coefficient)]
    out["fully_shard_grads"] = [q.grad.full_tensor().flatten().tolist() for q in model.parameters()]
    print("RESULT" + json.dumps(out), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    # gloo's background threads can abort ("terminate called without an active
    # exception") in static destructors when the machine is loaded; the work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
    """
)


def _reference(p: float) -> tuple[float, float, list[list[float]], list[float]]:
    g = torch.Generator().manual_seed(0)
    grads = [
        torch.randn(4, 3, generator=g),
        torch.randn(5, generator=g),
        torch.randn(6, 2, generator=g),
        torch.randn(3, generator=g),
    ]
    params = [torch.nn.Parameter(torch.zeros_like(t)) for t in grads]
    for q, t in zip(params, grads, strict=True):
        q.grad = t.clone()
    res = sst.clip_grad_norm_(params, 0.5, p, return_result=True)
    clipped = [q.grad.flatten().tolist() for q in params]
    # pipeline model: the four tensors plus the tied one, counted once
    tied = torch.nn.Parameter(torch.zeros(2))
    tied.grad = torch.tensor([0.5, -1.5])
    params2 = [torch.nn.Parameter(torch.zeros_like(t)) for t in grads] + [tied]
    for q, t in zip(params2, grads, strict=False):
        q.grad = t.clone()
    res2 = sst.clip_grad_norm_(params2, 0.5, p, return_result=True)
    return (
        float(res.norm),
        float(res.coefficient),
        clipped,
        [float(res2.norm), float(res2.coefficient), *tied.grad.tolist()],
    )


def test_two_ranks_match_single_process(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = str(free_port())
    results = run_workers([[str(script), str(rank), port] for rank in range(2)])

    for name, p in (("l2", 2.0), ("inf", math.inf), ("l1", 1.0)):
        norm, coef, clipped, pipe = _reference(p)
        for out in results:
            for kind in ("ddp", "fsdp"):
                got_norm, got_coef = out[f"{kind}_{name}"]
                assert got_norm == pytest.approx(norm, rel=1e-6), (kind, name)
                assert got_coef == pytest.approx(coef, rel=1e-6), (kind, name)
            for got, ref in zip(out[f"fsdp_{name}_grads"], clipped, strict=True):
                assert got == pytest.approx(ref, rel=1e-5, abs=1e-7)
            assert out[f"pipe_{name}"] == pytest.approx(pipe[:2], rel=1e-6)
            assert out[f"pipe_{name}_tied"] == pytest.approx(pipe[2:], rel=1e-6)
        assert results[0][f"fsdp_{name}"] == results[1][f"fsdp_{name}"]
        assert results[0][f"pipe_{name}"] == results[1][f"pipe_{name}"]

    for name, value in (("huge", 3e19), ("tiny", 1e-25)):
        want = value * math.sqrt(20.0)  # four entries of value, four of 2 * value
        for out in results:
            assert out[name] == pytest.approx(want, rel=1e-6), name
            assert out[name + "_dtensor"] == pytest.approx(want, rel=1e-6), name

    # fully_shard averages the ranks' gradients: the single-process twin averages the losses
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    xs = [torch.randn(4, 6, generator=torch.Generator().manual_seed(1 + r)) for r in range(2)]
    (sum(model(x).pow(2).sum() for x in xs) / 2).backward()
    ref = sst.clip_grad_norm_(model.parameters(), 0.5, return_result=True)
    for out in results:
        assert out["fully_shard"] == pytest.approx(
            [float(ref.norm), float(ref.coefficient)], rel=1e-5
        )
        for got, q in zip(out["fully_shard_grads"], model.parameters(), strict=True):
            assert got == pytest.approx(q.grad.flatten().tolist(), rel=1e-4, abs=1e-7)
