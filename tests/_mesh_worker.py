"""One rank of tests/test_clip_distributed_mesh.py: 4 gloo ranks run every layout in one world.

``python _mesh_worker.py RANK PORT`` prints ``RESULT<json>``; the test computes the
single-process references with the builders below (shared, so both sides build the same
models from the same seeds).
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import torch

NORMS = (("l2", 2.0), ("l1", 1.0), ("inf", math.inf))
#: gradient multipliers of the adaptive clippers' runs: steady, then a spike, then steady
FACTORS = (1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 9.0, 1.0)


def make_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))


def batch(i: int) -> torch.Tensor:
    return torch.randn(3, 6, generator=torch.Generator().manual_seed(1 + i))


def loss(model: torch.nn.Module, batches: list[int]) -> torch.Tensor:
    """Mean over ``batches`` of the per-batch loss (data-parallel ranks average gradients)."""
    return sum(model(batch(i)).pow(2).sum() for i in batches) / len(batches)


def expert_grads(rank_expert: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank_expert)
    return [torch.randn(5, 4, generator=g), torch.randn(5, generator=g)]


def dense_grads() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    return [torch.randn(4, 6, generator=g), torch.randn(4, generator=g)]


def clippers(sst: Any, params: Any, **kw: Any) -> dict[str, Any]:
    """The adaptive clippers every layout is checked with (``kw``: process_group, ...)."""
    return {
        "zclip": sst.ZClip(params, warmup_steps=3, **kw),
        "autoclip": sst.AutoClip(params, percentile=50.0, history=4, **kw),
        "spike": sst.SpikeSkip(params, window=8, min_history=3, max_norm=2.0, **kw),
    }


def run_clippers(sst: Any, params: list[Any], base: list[Any], **kw: Any) -> dict[str, Any]:
    """Each clipper over ``FACTORS``: gradients ``base * f``; (norm, threshold, coef, skipped)."""
    out: dict[str, Any] = {}
    for name, clipper in clippers(sst, params, **kw).items():
        rows = []
        for f in FACTORS:
            for q, b in zip(params, base, strict=True):
                q.grad = b * f
            clipper.clip()
            res = clipper.last
            rows.append([float(res.norm), float(res.threshold), float(res.coefficient)])
            rows[-1].append(bool(res.skipped))
        out[name] = rows
    for q, b in zip(params, base, strict=True):
        q.grad = b.clone()
    agc = sst.AGC(params, clipping=0.05, **kw)
    out["agc_norm"] = float(agc.clip())
    out["agc_grads"] = [_full(q.grad).flatten().tolist() for q in params]
    return out


def _clone(t: Any) -> Any:
    return None if t is None else t.clone()


def _full(t: Any) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def main() -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.debug import CommDebugMode
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    import steadystep.torch as sst

    rank, port = int(sys.argv[1]), int(sys.argv[2])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=4)
    out: dict[str, Any] = {}

    def norms(name: str, params: list[Any], **kw: Any) -> None:
        """clip_grad_norm_ for each p from the same gradients; result, grads, collectives."""
        saved = [q.grad.clone() for q in params]
        for pname, p in NORMS:
            for q, s in zip(params, saved, strict=True):
                q.grad = s.clone()
            with CommDebugMode() as comm:
                res = sst.clip_grad_norm_(params, 0.5, p, return_result=True, **kw)
            out[f"{name}_{pname}"] = {
                "norm": float(res.norm),
                "coef": float(res.coefficient),
                "grads": [_full(q.grad).flatten().tolist() for q in params],
                "comm": {str(k): v for k, v in comm.get_comm_counts().items()},
            }
        for q, s in zip(params, saved, strict=True):
            q.grad = s

    def tp_plan() -> dict[str, Any]:
        return {"0": ColwiseParallel(), "2": RowwiseParallel()}

    # FSDP2 over TP: a ("dp", "tp") mesh; parallelize_module, then fully_shard over dp
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    model = parallelize_module(make_model(), mesh["tp"], tp_plan())
    for module in (model[0], model[2], model):
        fully_shard(module, mesh=mesh["dp"])
    loss(model, [mesh.get_local_rank("dp")]).backward()
    params = list(model.parameters())
    out["fsdp_tp_placements"] = [str(q.grad.placements) for q in params]
    norms("fsdp_tp", params)
    from torch.nn.utils import get_total_norm

    out["fsdp_tp_torch"] = float(get_total_norm([q.grad for q in params]).full_tensor())
    out["fsdp_tp_clippers"] = run_clippers(sst, params, [q.grad.clone() for q in params])

    # HSDP: ("replicate", "shard"); each rank its own batch
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
    model = make_model()
    for module in (model[0], model[2], model):
        fully_shard(module, mesh=mesh)
    loss(model, [rank]).backward()
    params = list(model.parameters())
    norms("hsdp", params)
    base = [q.grad.clone() for q in params]
    out["hsdp_clippers"] = run_clippers(sst, params, base)
    # a non-finite value in one replica group's shard, after the gradient reduction
    bad = mesh.get_local_rank("replicate") == 1
    for agree in (True, False):
        for q, b in zip(params, base, strict=True):
            q.grad = b.clone()
        if bad:
            params[0].grad._local_tensor.view(-1)[0] = math.nan
        res = sst.clip_grad_norm_(params, 0.5, nonfinite="skip", agree=agree, return_result=True)
        out[f"hsdp_nan_agree={agree}"] = [float(res.norm), bool(res.skipped)]
    guard = sst.SpikeSkip(params, window=8, min_history=3)
    for q, b in zip(params, base, strict=True):
        q.grad = b.clone()
    if bad:
        params[2].grad._local_tensor.view(-1)[0] = math.inf
    guard.clip()
    out["hsdp_spike_nonfinite"] = [bool(guard.last.skipped), all(q.grad is None for q in params)]

    # TP alone on a 1-D mesh of 4: every rank the same batch
    mesh = init_device_mesh("cpu", (4,), mesh_dim_names=("tp",))
    model = parallelize_module(make_model(), mesh, tp_plan())
    loss(model, [0]).backward()
    params = list(model.parameters())
    norms("tp", params)
    out["tp_clippers"] = run_clippers(sst, params, [q.grad.clone() for q in params])

    # 3-D: (dp_replicate, dp_shard, tp) = (2, 1, 2): HSDP over TP
    mesh = init_device_mesh("cpu", (2, 1, 2), mesh_dim_names=("dp_replicate", "dp_shard", "tp"))
    model = parallelize_module(make_model(), mesh["tp"], tp_plan())
    for module in (model[0], model[2], model):
        fully_shard(module, mesh=mesh["dp_replicate", "dp_shard"])
    loss(model, [mesh.get_local_rank("dp_replicate")]).backward()
    params = list(model.parameters())
    norms("mesh3d", params)

    # expert parallelism: dense replicated on all 4 ranks; two experts, each on one rank of
    # ep groups {0, 1} and {2, 3} (the two ep groups are data-parallel replicas)
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    ep_group = groups[rank // 2]
    dense = [torch.nn.Parameter(torch.zeros_like(g)) for g in dense_grads()]
    expert = [torch.nn.Parameter(torch.zeros_like(g)) for g in expert_grads(rank % 2)]
    for q, g in zip(dense + expert, dense_grads() + expert_grads(rank % 2), strict=True):
        q.grad = g
    params = dense + expert
    pairs = [(dense, None), (expert, ep_group)]
    norms("ep", params, process_group=pairs)
    out["ep_clippers"] = run_clippers(
        sst, params, [q.grad.clone() for q in params], process_group=pairs
    )
    errors = []
    for bad_pairs in ([(dense, None)], [(params, None), (expert, ep_group)], [dense]):
        try:
            sst.clip_grad_norm_(params, 0.5, process_group=bad_pairs)
        except (TypeError, ValueError) as exc:
            errors.append(str(exc))
    out["ep_errors"] = errors

    # FSDP1 over the world, each rank its own batch; against FSDP1's own clip_grad_norm_
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    for orig in (True, False):
        model = FSDP(make_model(), use_orig_params=orig, device_id=torch.device("cpu"))
        loss(model, [rank]).backward()
        params = list(model.parameters())
        saved = [_clone(q.grad) for q in params]
        try:
            sst.clip_grad_norm_(params, 0.5)
            out[f"fsdp1_{orig}_refused"] = ""
        except ValueError as exc:
            out[f"fsdp1_{orig}_refused"] = str(exc)
        for pname, p in NORMS:
            for q, s in zip(params, saved, strict=True):
                q.grad = _clone(s)
            with CommDebugMode() as comm:
                res = sst.clip_grad_norm_(
                    params, 0.5, p, process_group=model.process_group, return_result=True
                )
            ours = [_clone(q.grad) for q in params]
            for q, s in zip(params, saved, strict=True):
                q.grad = _clone(s)
            theirs = model.clip_grad_norm_(0.5, p)
            for q, s in zip(params, saved, strict=True):
                q.grad = _clone(s)
            with CommDebugMode() as auto_comm:
                auto = sst.clip_grad_norm_(model, 0.5, p, return_result=True)  # the model itself
            auto_diff = max(
                float((a - q.grad).abs().max()) if a is not None and a.numel() else 0.0
                for a, q in zip(ours, params, strict=True)
            )
            out[f"fsdp1_{orig}_{pname}"] = {
                "norm": float(res.norm),
                "coef": float(res.coefficient),
                "fsdp_norm": float(theirs),
                "max_diff": max(
                    float((a - q.grad).abs().max()) if a is not None and a.numel() else 0.0
                    for a, q in zip(ours, params, strict=True)
                ),
                "comm": {str(k): v for k, v in comm.get_comm_counts().items()},
                "auto": [float(auto.norm), float(auto.coefficient), auto_diff],
                "auto_comm": {str(k): v for k, v in auto_comm.get_comm_counts().items()},
            }
        for q, s in zip(params, saved, strict=True):
            q.grad = _clone(s)
        clipper = sst.ZClip(model, warmup_steps=3)
        out[f"fsdp1_{orig}_zclip"] = float(clipper.clip())

    # the agreement collective itself (the loss-aware skip agrees its flag with it)
    from steadystep.torch._distributed import agree

    out["agree"] = [
        bool(agree(torch.tensor(rank == 3))),
        float(agree(torch.tensor(float(rank)))),
        math.isnan(float(agree(torch.tensor(math.nan if rank == 1 else 1.0)))),
        bool(agree(torch.tensor(rank == 0), groups[rank // 2])),
    ]

    print("RESULT" + json.dumps(out), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    # gloo's background threads can abort in static destructors on a loaded machine
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
