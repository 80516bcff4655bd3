"""One DeepSpeed rank on CPU (gloo) for tests/test_clip_distributed_api.py: prints RESULT<json>.

``python _deepspeed_worker.py PORT STAGE``: a ZeRO-``STAGE`` engine over a torch SGD, driven by
``ss.torch.Scheduler(engine.optimizer, ...)`` and an AutoClip fed ``engine.get_global_grad_norm()``;
a plain twin gives the true norms.
"""

import json
import os
import sys


def main() -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    os.environ.update(LOCAL_RANK="0")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

    import deepspeed
    import deepspeed.comm.torch
    import torch

    import steadystep as ss
    import steadystep.torch as sst

    # DeepSpeed JIT-compiles a C++ shared-memory op for CPU collectives; gloo does not need it
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    twin = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    twin.load_state_dict(model.state_dict())
    config = {
        "train_batch_size": 1,
        "zero_allow_untested_optimizer": True,
        "zero_optimization": {"stage": int(sys.argv[2])},
    }
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), config=config
    )
    sched = sst.Scheduler(engine.optimizer, ss.linear(0.1, 0.0, 10))
    clipper = sst.AutoClip(model.parameters(), percentile=50.0, history=4)
    out = {"wrapper_is_optimizer": isinstance(engine.optimizer, torch.optim.Optimizer), "steps": []}
    for step in range(3):
        x = torch.randn(1, 6, generator=torch.Generator().manual_seed(step))
        engine.backward(engine(x).pow(2).sum())
        engine.step()
        sched.step()
        twin.zero_grad()
        twin(x).pow(2).sum().backward()
        true = float(torch.nn.utils.get_total_norm([p.grad for p in twin.parameters()]))
        res = clipper.observe(engine.get_global_grad_norm())
        engine.optimizer.clip_grad = float(res.threshold)  # DeepSpeed clips the next step to it
        lr = sched.optimizer.param_groups[0]["lr"]
        out["steps"].append([float(res.norm), true, float(res.threshold), lr])
        with torch.no_grad():
            for p, q in zip(twin.parameters(), model.parameters(), strict=True):
                p.copy_(q)
    print("RESULT" + json.dumps(out), flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
