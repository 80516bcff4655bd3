"""steadystep.torch.Scheduler: values, per-group schedules, any hyperparameter, real-update
counting (GradScaler, accumulation), state dicts and exact resume, tensor LR under compile."""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import steadystep as ss  # noqa: E402
from steadystep.torch import Scheduler  # noqa: E402

from .strategies import any_schedule  # noqa: E402

COSINE = ss.warmup(ss.cosine(0.1, 0.001, steps=600), steps=40)


def make(n_groups: int = 1, opt: type = torch.optim.SGD, **kw: object) -> torch.optim.Optimizer:
    torch.manual_seed(0)
    groups = [
        {"params": [torch.nn.Parameter(torch.randn(3))], "name": f"g{i}", "lr": 0.1 * (i + 1)}
        for i in range(n_groups)
    ]
    return opt(groups, **kw)


def update(opt: torch.optim.Optimizer) -> None:
    """One real optimizer update (gradients of a simple loss)."""
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    opt.step()


def lrs(opt: torch.optim.Optimizer, key: str = "lr") -> list[float]:
    return [float(g[key]) for g in opt.param_groups]


def vectorised(s: ss.Schedule, k: int) -> float:
    """The value at step ``k`` as the scheduler computes it: from an aligned NumPy block."""
    return float(s(np.arange(k - k % 256, k - k % 256 + 256))[k % 256])


# -- values -----------------------------------------------------------------------------------
def test_construction_sets_schedule_0_and_each_step_advances_by_one() -> None:
    opt = make()
    sched = Scheduler(opt, COSINE)
    assert lrs(opt) == [COSINE(0)] == sched.get_last_lr()
    seen = []
    for _ in range(700):  # crosses several 256-step blocks
        seen.append(opt.param_groups[0]["lr"])
        update(opt)
        sched.step()
    expected = COSINE(np.arange(700))
    assert np.array_equal(seen, expected)  # the aligned blocks are exactly the vectorised values
    np.testing.assert_allclose(seen, [COSINE(k) for k in range(700)], rtol=1e-15, atol=0)
    assert sched.last_epoch == 700 and sched.state_dict()["step"] == 700
    assert isinstance(opt.param_groups[0]["lr"], float)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    assert "initial_lr" not in opt.param_groups[0]  # none of torch's sentinels


def test_seed_004_noam_formula_reproduced_per_update() -> None:
    opt = make()
    sched = Scheduler(opt, ss.presets.noam(0.01, warmup_steps=500))
    for t in range(30):
        assert opt.param_groups[0]["lr"] == pytest.approx(
            0.01 * min((t + 1) / 500, 500**0.5 / (t + 1)), rel=1e-14
        )
        update(opt)
        sched.step()


def test_step_without_an_update_does_nothing_and_last_epoch_jumps() -> None:
    opt = make()
    sched = Scheduler(opt, ss.linear(1.0, 0.0, steps=10))
    sched.step()
    sched.step()
    assert sched.last_epoch == 0 and lrs(opt) == [1.0]
    sched.last_epoch = 5
    assert lrs(opt) == [0.5]
    update(opt)
    sched.step()
    assert sched.last_epoch == 6 and lrs(opt) == [pytest.approx(0.4)]
    with pytest.raises(TypeError, match="takes no step number"):
        sched.step(3)  # type: ignore[arg-type]


# -- per-group schedules, relative, any hyperparameter -------------------------------------------
def test_list_and_mapping_and_none_per_group() -> None:
    a, b = ss.constant(0.5), ss.linear(1.0, 0.0, steps=4)
    opt = make(3)
    Scheduler(opt, [a, None, b])
    assert lrs(opt) == [0.5, pytest.approx(0.2), 1.0]
    opt = make(3)
    sched = Scheduler(opt, {"g2": a, "g0": b, "g1": None})
    assert lrs(opt) == [1.0, pytest.approx(0.2), 0.5]
    update(opt)
    sched.step()
    assert lrs(opt) == [0.75, pytest.approx(0.2), 0.5]


def test_relative_keeps_layerwise_ratios_and_bases_are_state() -> None:
    opt = make(3)
    bases = lrs(opt)  # 0.1, 0.2, 0.3 (up to rounding)
    mult = ss.cosine(1.0, 0.0, steps=10)
    sched = Scheduler(opt, mult, relative=True)
    for k in range(12):
        assert lrs(opt) == [base * vectorised(mult, k) for base in bases]
        update(opt)
        sched.step()
    assert sched.state_dict()["bases"] == bases == sched.base_lrs


@pytest.mark.parametrize(
    ("opt_cls", "kw", "param"),
    [
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, "momentum"),
        (torch.optim.AdamW, {"weight_decay": 0.1}, "weight_decay"),
        (torch.optim.Adam, {}, "betas[0]"),
    ],
)
def test_any_hyperparameter(opt_cls: type, kw: dict[str, float], param: str) -> None:
    opt = make(2, opt_cls, **kw)
    s = ss.linear(0.95, 0.85, steps=4)
    sched = Scheduler(opt, s, param=param)
    for k in range(6):
        for g in opt.param_groups:
            value = g["betas"][0] if param == "betas[0]" else g[param]
            assert value == vectorised(s, k)
            if param == "betas[0]":
                assert isinstance(g["betas"], tuple) and g["betas"][1] == 0.999
        update(opt)
        sched.step()


def test_one_cycle_lr_and_momentum_schedulers_side_by_side() -> None:
    opt = make(1, torch.optim.SGD, momentum=0.9)
    lr_s = ss.presets.one_cycle(1.0, total_steps=20)
    mom_s = ss.presets.one_cycle_momentum(total_steps=20)
    s1, s2 = Scheduler(opt, lr_s), Scheduler(opt, mom_s, param="momentum")
    for k in range(20):
        assert lrs(opt) == [vectorised(lr_s, k)]
        assert lrs(opt, "momentum") == [vectorised(mom_s, k)]
        update(opt)
        s1.step()
        s2.step()


# -- counting real updates ----------------------------------------------------------------------
def test_gradscaler_skip_does_not_advance_and_does_not_warn() -> None:
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = Scheduler(opt, ss.linear(1.0, 0.0, steps=10))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    applied = []
    opt.register_step_pre_hook(lambda o, a, k: applied.append(o.param_groups[0]["lr"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "scheduler stepped before optimizer" would fail here
        for i in range(6):
            x = torch.full((3,), math.inf if i in (0, 3) else 1.0)  # overflow: skipped updates
            scaler.scale(model(x).sum()).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            sched.step()
    assert applied == [1.0, 0.9, 0.8, 0.7]  # 4 real updates, each with the next value
    assert sched.last_epoch == 4


def test_gradscaler_skip_inside_a_fused_optimizer_is_not_counted() -> None:
    # fused optimizers are always called by GradScaler and skip on the device via `found_inf`
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    sched = Scheduler(opt, ss.linear(1.0, 0.0, steps=10))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    for i in range(5):
        x = torch.full((3,), math.inf if i in (1, 2) else 1.0)
        scaler.scale(model(x).sum()).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        sched.step()
    assert sched.last_epoch == 3 == int(opt.state[model.weight]["step"])
    assert lrs(opt) == [pytest.approx(0.7)]


def test_gradient_accumulation_advances_once_per_update() -> None:
    opt = make()
    sched = Scheduler(opt, ss.linear(1.0, 0.0, steps=10))
    for micro in range(12):
        if (micro + 1) % 4 == 0:
            update(opt)
        sched.step()  # called every micro-batch: only real updates count
    assert sched.last_epoch == 3 and lrs(opt) == [pytest.approx(0.7)]


def test_per_epoch_stepping_warns_and_points_to_from_epochs() -> None:
    opt = make()
    sched = Scheduler(opt, ss.presets.noam(0.01, warmup_steps=500))
    for _ in range(10):
        update(opt)
    with pytest.warns(UserWarning, match=r"after 10 optimizer updates.*from_epochs"):
        sched.step()
    assert sched.last_epoch == 10  # the schedule still counts updates: no seed-004 mix-up
    for _ in range(10):
        update(opt)
    sched.step()  # warned once, not on every epoch


# -- state dict and resume ----------------------------------------------------------------------
def test_state_dict_is_json_and_weights_only_loadable() -> None:
    opt = make(2)
    sched = Scheduler(opt, [COSINE, ss.constant(0.5)], relative=True)
    for _ in range(3):
        update(opt)
        sched.step()
    sd = sched.state_dict()
    assert json.loads(json.dumps(sd)) == sd
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == sd
    assert sd["step"] == 3 and sd["schedules"] == [repr(COSINE), repr(ss.constant(0.5))]


def _run(schedule: ss.Schedule, n: int, *, tensor: bool, stop: int | None = None) -> list[float]:
    """LRs used by ``n`` updates; with ``stop``, the process 'dies' after ``stop`` updates and a
    fresh optimizer + scheduler resume from the saved states (through bytes, weights_only)."""
    opt = make(2, torch.optim.AdamW)
    sched = Scheduler(opt, schedule, tensor=tensor, relative=True)
    used = []
    for k in range(n):
        if k == stop:
            buf = io.BytesIO()
            torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
            buf.seek(0)
            ckpt = torch.load(buf, weights_only=True)
            opt = make(2, torch.optim.AdamW)
            sched = Scheduler(opt, schedule, tensor=tensor, relative=True)
            opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
        used.append(lrs(opt))
        update(opt)
        sched.step()
    return used


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=any_schedule, stop=st.integers(0, 300))
def test_kill_anywhere_and_resume_is_bit_identical(schedule: ss.Schedule, stop: int) -> None:
    assert _run(schedule, 301, tensor=False, stop=stop) == _run(schedule, 301, tensor=False)


@pytest.mark.parametrize("stop", [0, 1, 255, 256, 300])
def test_tensor_mode_resume_is_bit_identical(stop: int) -> None:
    assert _run(COSINE, 320, tensor=True, stop=stop) == _run(COSINE, 320, tensor=True)


def test_load_rejects_a_different_schedule_and_says_what_differs() -> None:
    opt = make(2)
    sd = Scheduler(opt, [COSINE, ss.constant(0.5)]).state_dict()
    other = Scheduler(make(2), [COSINE, ss.constant(0.25)])
    with pytest.raises(
        ValueError, match=r"group 1: saved constant\(value=0.5\); now constant\(value=0.25\)"
    ):
        other.load_state_dict(sd)
    with pytest.raises(ValueError, match="param='lr' but this scheduler schedules param='mom"):
        Scheduler(make(2, momentum=0.9), COSINE, param="momentum").load_state_dict(sd)
    with pytest.raises(ValueError, match="relative=False but this scheduler has relative=True"):
        Scheduler(make(2), [COSINE, ss.constant(0.5)], relative=True).load_state_dict(sd)
    with pytest.raises(ValueError, match="for 2 param groups; this optimizer has 1"):
        Scheduler(make(1), COSINE).load_state_dict(sd)
    with pytest.raises(ValueError, match="not a steadystep Scheduler state"):
        other.load_state_dict(torch.optim.lr_scheduler.StepLR(opt, 3).state_dict())


def test_resume_with_an_appended_cooldown_on_purpose() -> None:
    open_ended = ss.presets.wsd(1.0, warmup_steps=10)
    opt = make()
    sched = Scheduler(opt, open_ended)
    sched.last_epoch = 50
    sd = sched.state_dict()
    cooled = ss.presets.append_cooldown(open_ended, at_step=60, steps=10, cooldown="linear")
    resumed = Scheduler(make(), cooled)
    resumed.load_state_dict(sd, schedule_changed_ok=True)
    assert resumed.last_epoch == 50 and resumed.get_last_lr() == [1.0]
    resumed.last_epoch = 65
    assert resumed.get_last_lr() == [pytest.approx(0.5)]


@pytest.mark.parametrize("bad", [-1, 2.5, "3", None, True, math.nan])
def test_load_rejects_negative_or_non_integer_steps(bad: object) -> None:
    sched = Scheduler(make(), COSINE)
    sd = sched.state_dict() | {"step": bad}
    with pytest.raises(ValueError, match=r'`state_dict\["step"\]` must be'):
        sched.load_state_dict(sd)
    assert sched.last_epoch == 0
    sched.load_state_dict(sched.state_dict() | {"step": 12.0})  # JSON may write 12 as 12.0
    assert sched.last_epoch == 12


def test_deepcopy_counts_its_own_optimizer() -> None:
    import copy

    opt = make()
    sched = Scheduler(opt, ss.linear(1.0, 0.0, steps=10))
    opt2, sched2 = copy.deepcopy((opt, sched))
    update(opt2)
    sched2.step()
    sched.step()
    assert (sched.last_epoch, sched2.last_epoch) == (0, 1)
    assert lrs(opt2) == [pytest.approx(0.9)] and lrs(opt) == [1.0]


# -- bad input ----------------------------------------------------------------------------------
def test_bad_arguments_name_what_is_wrong() -> None:
    with pytest.raises(TypeError, match=r"`optimizer` must be a torch\.optim\.Optimizer.*list"):
        Scheduler([1], COSINE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"has no 'momentum'\. Its keys: 'name', 'lr', 'betas'"):
        Scheduler(make(1, torch.optim.Adam), COSINE, param="momentum")
    with pytest.raises(ValueError, match=r"pick an element, e.g. param='betas\[0\]'"):
        Scheduler(make(1, torch.optim.Adam), COSINE, param="betas")
    with pytest.raises(ValueError, match=r"param='betas\[2\]'"):
        Scheduler(make(1, torch.optim.Adam), COSINE, param="betas[2]")
    with pytest.raises(ValueError, match=r"one entry per param group \(2\)\. Received: 3"):
        Scheduler(make(2), [COSINE] * 3)
    with pytest.raises(ValueError, match=r"missing: \['g1'\]; unknown: \['head'\]"):
        Scheduler(make(2), {"g0": COSINE, "head": COSINE})
    with pytest.raises(TypeError, match=r"`schedule\[1\]` must be a Schedule"):
        Scheduler(make(2), [COSINE, 0.1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="`schedule` must be a steadystep Schedule"):
        Scheduler(make(), lambda t: 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`relative` must be True or False"):
        Scheduler(make(), COSINE, relative=1)  # type: ignore[arg-type]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match="param_groups\\[0\\] has no 'name' key"):
        Scheduler(opt, {"a": COSINE})
    sched = Scheduler(opt, COSINE)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))]})
    update(opt)
    with pytest.raises(
        RuntimeError, match="now has 2 param groups; this Scheduler was built for 1"
    ):
        sched.step()


# -- tensor LR ----------------------------------------------------------------------------------
def test_tensor_mode_updates_one_tensor_in_place() -> None:
    opt = make(2, torch.optim.Adam)
    sched = Scheduler(opt, COSINE, tensor=True)
    held = [g["lr"] for g in opt.param_groups]
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in held)
    for k in range(300):
        for g, t in zip(opt.param_groups, held, strict=True):
            assert g["lr"] is t  # the same object every step
            assert t.item() == np.float32(COSINE(torch.tensor(k)).item())
        update(opt)
        sched.step()
    # optimizer.load_state_dict puts new tensors in the groups: the scheduler re-installs its own
    opt.load_state_dict(opt.state_dict())
    update(opt)
    sched.step()
    assert opt.param_groups[0]["lr"] is held[0]


def _compiled_loop(tensor: bool, n: int, backend: str = "eager") -> tuple[int, list[float]]:
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.01) if tensor else 0.01)
    sched = Scheduler(opt, COSINE, tensor=tensor)
    counter = CompileCounterWithBackend(backend)  # counts the frames dynamo compiles

    @torch.compile(backend=counter)
    def opt_step() -> None:
        opt.step()

    used = []
    for _ in range(n):
        model(torch.ones(4)).sum().backward()
        used.append(float(opt.param_groups[0]["lr"]))
        opt_step()
        opt.zero_grad(set_to_none=False)
        sched.step()
    assert sched.last_epoch == n  # the step hook still counts inside the compiled step
    return counter.frame_count, used


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_tensor_lr_does_not_recompile_a_compiled_optimizer_step() -> None:
    frames, used = _compiled_loop(tensor=True, n=100)
    assert frames == 1  # compiled once: zero recompiles over 100 scheduled steps
    assert used == [float(np.float32(COSINE(k))) for k in range(100)]
    float_frames, _ = _compiled_loop(tensor=False, n=5)
    assert float_frames > 1  # the same loop with a Python-float LR recompiles


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensor_mode_on_cuda_never_syncs() -> None:
    model = torch.nn.Linear(4, 2, device="cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, capturable=True)
    sched = Scheduler(opt, COSINE, tensor=True)
    lr = opt.param_groups[0]["lr"]
    assert lr.device.type == "cuda"
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync raises
    try:
        for _ in range(300):  # crosses a block boundary: the block is evaluated on the device
            model(torch.ones(4, device="cuda")).sum().backward()
            opt.step()
            opt.zero_grad()
            sched.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert lr.item() == pytest.approx(COSINE(300), rel=1e-6)  # float32, computed on the GPU


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_tensor_lr_does_not_recompile_with_inductor() -> None:
    frames, used = _compiled_loop(tensor=True, n=30, backend="inductor")
    assert frames == 1
    assert used == [float(np.float32(COSINE(k))) for k in range(30)]
