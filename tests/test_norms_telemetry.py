"""Read-only norms (grad_norm, grad_norms) and Telemetry, logged through real TensorBoard."""

from __future__ import annotations

import math

import pytest
import torch

import steadystep as ss


def _net(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    net.to(dtype)
    net(torch.randn(3, 4, dtype=dtype)).square().sum().backward()
    return net


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, math.inf])
def test_grad_norm_is_clip_grad_norm_without_the_clip(dtype: torch.dtype, norm_type: float) -> None:
    net = _net(dtype)
    before = [p.grad.clone() for p in net.parameters()]
    norm = ss.torch.grad_norm(net.parameters(), norm_type)
    assert norm.dtype == torch.float32 and norm.ndim == 0
    for p, g in zip(net.parameters(), before, strict=True):
        assert torch.equal(p.grad, g)  # nothing clipped
    clipped = ss.torch.clip_grad_norm_(net.parameters(), 1e-3, norm_type)
    assert torch.equal(norm, clipped)  # bit-identical: the same function computes both


def test_grad_norm_rules() -> None:
    net = _net()
    params = list(net.parameters())
    full = ss.torch.grad_norm(params)
    no_head = ss.torch.grad_norm(params, duplicates=params[-2:])
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params[:-2]]))
    assert torch.allclose(no_head, expected)
    assert no_head < full
    assert ss.torch.grad_norm([torch.nn.Parameter(torch.ones(2))]) == 0  # no gradient at all
    with pytest.raises(ValueError, match="Argument `norm_type` must be > 0"):
        ss.torch.grad_norm(params, -1.0)
    with pytest.raises(TypeError, match="Argument `parameters`"):
        ss.torch.grad_norm("weights")  # type: ignore[arg-type]


def test_grad_norms_match_lightnings_breakdown() -> None:
    from lightning.pytorch.utilities import grad_norm as lightning_grad_norm

    net = _net()
    ours = ss.torch.grad_norms(net, 2.0)
    theirs = lightning_grad_norm(net, 2.0)
    for name, _ in net.named_parameters():
        assert torch.allclose(ours[f"grad/norm/{name}"], theirs[f"grad_2.0_norm/{name}"])
    assert torch.allclose(ours["grad/norm"], theirs["grad_2.0_norm_total"])
    assert torch.equal(ours["grad/norm"], ss.torch.grad_norm(net.parameters()))
    by_module = ss.torch.grad_norms(net, by="module")
    assert set(by_module) == {"grad/norm/0", "grad/norm/2", "grad/norm"}
    first = torch.cat([net[0].weight.grad.flatten(), net[0].bias.grad.flatten()])
    assert torch.allclose(by_module["grad/norm/0"], torch.linalg.vector_norm(first))
    with pytest.raises(ValueError, match="Argument `by` must be one of"):
        ss.torch.grad_norms(net, by="layer")


def _train(tensor: bool, writer: object | None, steps: int = 6, every: int = 3) -> list[dict]:
    net = _net()
    opt = torch.optim.SGD(
        [
            {"params": net[0].parameters(), "name": "body"},
            {"params": net[2].parameters(), "name": "head"},
        ],
        lr=0.1,
    )
    sched = ss.torch.Scheduler(opt, ss.linear(0.1, 0.0, steps=steps), tensor=tensor)
    tel = ss.torch.Telemetry(sched, every=every)
    logged = []
    for i in range(steps):
        opt.zero_grad()
        loss = net(torch.randn(3, 4)).square().sum() * (1e6 if i == 4 else 1.0)
        if i == 5:
            loss = loss * math.inf
        loss.backward()
        result = ss.torch.clip_grad_norm_(
            net.parameters(), 1.0, nonfinite="skip", optimizer=opt, return_result=True
        )
        opt.step()
        sched.step()
        scalars = tel.step(result)
        if scalars is not None:
            logged.append(scalars)
            if writer is not None:
                for key, value in scalars.items():
                    writer.add_scalar(key, value, i + 1)  # type: ignore[attr-defined]
                for g, lr in zip(("body", "head"), sched.get_last_lr(), strict=True):
                    writer.add_scalar(f"raw/{g}", lr, i + 1)  # type: ignore[attr-defined]
    return logged


@pytest.mark.parametrize("tensor", [False, True])
def test_telemetry_through_tensorboard(tmp_path, tensor: bool) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    logged = _train(tensor, writer)
    writer.close()
    assert len(logged) == 2
    first, second = logged
    assert set(first) == {
        "lr/body",
        "lr/head",
        "grad/norm",
        "grad/norm_max",
        "grad/clipped",
        "grad/skipped",
    }
    assert first["lr/body"] == pytest.approx(0.1 * (1 - 3 / 6))
    assert second["grad/skipped"] == 1.0  # step 6 had an infinite norm
    assert second["grad/norm_max"] > 1e5  # step 5's big loss; the inf is not averaged in
    assert math.isfinite(second["grad/norm"])
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"lr/body", "lr/head", "grad/norm", "grad/clipped", "grad/skipped"} <= tags
    events = acc.Scalars("lr/head")
    assert [e.step for e in events] == [3, 6]
    assert events[0].value == pytest.approx(first["lr/head"])
    # get_last_lr() stays loggable when the LRs are tensors
    assert acc.Scalars("raw/head")[1].value == pytest.approx(second["lr/head"], abs=1e-7)
    assert acc.Scalars("grad/skipped")[1].value == 1.0


def test_telemetry_makes_no_host_read_between_logging_steps(monkeypatch) -> None:
    reads = []
    original = torch.Tensor.tolist

    def counting(self):  # type: ignore[no-untyped-def]
        reads.append(self.shape)
        return original(self)

    net = _net()
    tel = ss.torch.Telemetry(every=4)
    # the norms first: on CPU, grad_norm reads a flag to rescue out-of-range norms (free on
    # the host, device-side on an accelerator); what is counted here is Telemetry's own reads
    norms = [ss.torch.grad_norm(net.parameters()) for _ in range(4)]
    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("item() called"))
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: pytest.fail("bool() called"))
    for norm in norms[:3]:
        assert tel.step(norm) is None
    assert reads == []
    out = tel.step(norms[3])
    monkeypatch.undo()
    assert len(reads) == 1
    assert out is not None and out["grad/norm"] == pytest.approx(
        float(ss.torch.grad_norm(net.parameters()))
    )


def test_telemetry_bad_input() -> None:
    with pytest.raises(ValueError, match="Argument `every` must be >= 1"):
        ss.torch.Telemetry(every=0)
    with pytest.raises(TypeError, match="Argument `scheduler`"):
        ss.torch.Telemetry(scheduler="cosine")
    with pytest.raises(TypeError, match="Argument `result`"):
        ss.torch.Telemetry().step(3.0)  # type: ignore[arg-type]
