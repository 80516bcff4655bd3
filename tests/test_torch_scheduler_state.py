"""steadystep.torch.Scheduler state that outlives a step: the user's tensor LR is kept and filled
in place, ``relative=True`` starts from torch's ``initial_lr``, and a state dict resumes whatever
the schedule's length."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
from steadystep.torch import Scheduler  # noqa: E402

COSINE = ss.warmup(ss.cosine(0.1, 0.001, steps=600), steps=40)


def two_groups(opt_cls: type = torch.optim.Adam, **kw: object) -> torch.optim.Optimizer:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return opt_cls([{"params": [model.weight]}, {"params": [model.bias]}], **kw)


def update(opt: torch.optim.Optimizer) -> None:
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    opt.step()


def expected(s: ss.Schedule, k: int, dtype: torch.dtype = torch.float32) -> float:
    """``s(k)`` as the scheduler writes it into a tensor: float64 on the device, then cast."""
    return s(torch.tensor(k)).to(dtype).item()


# -- the user's tensor LR -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(), (1,)])
def test_a_tensor_lr_is_kept_and_filled_in_place(dtype: torch.dtype, shape: tuple[int]) -> None:
    lr = torch.full(shape, 0.01, dtype=dtype)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = Scheduler(opt, COSINE)  # tensor=False: the group's own tensor is kept all the same
    for k in range(300):  # crosses a block boundary
        assert opt.param_groups[0]["lr"] is lr
        assert lr.dtype == dtype and lr.shape == shape
        assert lr.item() == expected(COSINE, k, dtype)
        update(opt)
        sched.step()
    last = sched.get_last_lr()[0]
    assert last.shape == () and last is not lr  # a 0-dim copy, loggable as a number
    assert float(last) == lr.item() and f"{last:.3g}" == f"{lr.item():.3g}"
    assert json.dumps([float(v) for v in sched.get_last_lr()])


def test_a_compiled_consumer_holding_the_tensor_sees_every_update() -> None:
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    lr = torch.tensor(0.01)
    opt = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=lr)
    sched = Scheduler(opt, COSINE)
    counter = CompileCounter()

    @torch.compile(backend=counter)
    def scaled_step(g: torch.Tensor) -> torch.Tensor:
        return g * lr  # the tensor is an input of the graph, not a constant baked into it

    for k in range(50):
        assert scaled_step(torch.ones(2)).tolist() == [expected(COSINE, k)] * 2
        update(opt)
        sched.step()
    assert counter.frame_count == 1  # compiled once: the value changed in place


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_compiled_optimizer_step_with_the_default_tensor_false_does_not_recompile() -> None:
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.01))
    sched = Scheduler(opt, COSINE)
    counter = CompileCounter()
    step = torch.compile(opt.step, backend=counter)
    for _ in range(20):
        model(torch.ones(4)).sum().backward()
        step()
        opt.zero_grad()
        sched.step()
    assert counter.frame_count == 1 and sched.last_epoch == 20


def test_torch_shares_one_tensor_between_groups_and_each_group_still_gets_its_value() -> None:
    opt = two_groups(lr=torch.tensor(0.01))
    shared = opt.param_groups[0]["lr"]
    assert opt.param_groups[1]["lr"] is shared  # torch's doing: both groups take the default
    other = ss.linear(0.5, 0.0, steps=100)
    sched = Scheduler(opt, [COSINE, other])
    first, second = (g["lr"] for g in opt.param_groups)
    assert first is shared and second is not shared  # the later group got its own copy
    for k in range(30):
        assert [first.item(), second.item()] == [expected(COSINE, k), expected(other, k)]
        update(opt)
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [first, second]


def test_groups_that_share_a_tensor_and_a_schedule_keep_sharing_it() -> None:
    opt = two_groups(lr=torch.tensor(0.01))
    shared = opt.param_groups[0]["lr"]
    sched = Scheduler(opt, COSINE)
    update(opt)
    sched.step()
    assert all(g["lr"] is shared for g in opt.param_groups)
    assert shared.item() == expected(COSINE, 1)


def test_a_group_left_alone_does_not_follow_a_shared_tensor() -> None:
    opt = two_groups(lr=torch.tensor(0.01))
    sched = Scheduler(opt, [None, COSINE])
    for _ in range(5):
        update(opt)
        sched.step()
    assert opt.param_groups[0]["lr"].item() == pytest.approx(0.01)  # untouched
    assert opt.param_groups[1]["lr"].item() == expected(COSINE, 5)


@pytest.mark.parametrize(
    "lr", [torch.tensor(1, dtype=torch.int64), torch.tensor([0.1, 0.2])], ids=["int", "2 elements"]
)
def test_tensors_that_cannot_hold_an_lr_are_refused(lr: torch.Tensor) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.param_groups[0]["lr"] = lr
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['lr'\] must be a number or a 1-el"):
        Scheduler(opt, COSINE)


def test_a_tensor_lr_that_requires_grad_is_filled_too() -> None:
    lr = torch.tensor(0.01, requires_grad=True)  # e.g. a learned LR; fill_ on it would raise
    opt = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=lr)
    Scheduler(opt, ss.constant(0.25))
    assert lr.item() == 0.25


# -- relative=True ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "torch_scheduler",
    [
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / 10),  # sets lr to 0
        lambda opt: torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5),
    ],
    ids=["LambdaLR", "LinearLR"],
)
def test_relative_takes_its_base_from_initial_lr(torch_scheduler: object) -> None:
    opt = two_groups(torch.optim.SGD, lr=0.1)
    opt.param_groups[1]["lr"] = 0.02
    torch_scheduler(opt)  # type: ignore[operator]
    assert opt.param_groups[0]["lr"] != 0.1  # torch has moved lr already
    mult = ss.cosine(1.0, 0.0, steps=10)
    sched = Scheduler(opt, mult, relative=True)
    assert sched.base_lrs == [0.1, 0.02]
    for k in range(12):
        assert [g["lr"] for g in opt.param_groups] == [0.1 * mult(k), 0.02 * mult(k)]
        update(opt)
        sched.step()


def test_relative_refuses_a_zero_base() -> None:
    opt = two_groups(torch.optim.SGD, lr=0.1)
    opt.param_groups[1]["lr"] = 0.0  # a frozen head, say
    with pytest.raises(ValueError, match=r"initial values\[1\] is 0.0: every value would be 0"):
        Scheduler(opt, ss.cosine(1.0, 0.0, steps=10), relative=True)
    sched = Scheduler(opt, [ss.cosine(1.0, 0.0, steps=10), None], relative=True)  # the fix
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.0]
    bad = {**sched.state_dict(), "bases": [0.0, 0.0]}
    with pytest.raises(ValueError, match=r'state_dict\["bases"\]\[0\] is 0.0'):
        sched.load_state_dict(bad)
    with pytest.raises(ValueError, match=r'state_dict\["bases"\]\[0\] is nan'):
        sched.load_state_dict({**bad, "bases": [float("nan"), 0.0]})
    sched.load_state_dict({**bad, "bases": [0.2, float("nan")]})  # group 1 is left alone
    assert opt.param_groups[0]["lr"] == 0.2


# -- resuming whatever the schedule's length ------------------------------------------------------
def _long() -> ss.Schedule:
    n = 20_000
    return ss.piecewise([10 * (i + 1) for i in range(n)], [1e-3 / (i + 1) for i in range(n + 1)])


def _deep() -> ss.Schedule:
    s: ss.Schedule = ss.constant(1e-3)
    for _ in range(100):  # nested deeper than spec text may be
        s = s * 1.01
    return s


@pytest.mark.parametrize("build", [_long, _deep], ids=["20000 pieces", "100 levels"])
def test_a_state_dict_resumes_a_schedule_too_big_for_spec_text(build: object) -> None:
    schedule = build()  # type: ignore[operator]
    with pytest.raises(ss.SpecError):
        ss.parse(repr(schedule))  # over parse's limits for untrusted text
    opt = two_groups(torch.optim.SGD, lr=0.1)
    sched = Scheduler(opt, schedule)
    for _ in range(7):
        update(opt)
        sched.step()
    state = json.loads(json.dumps(sched.state_dict()))
    resumed_opt = two_groups(torch.optim.SGD, lr=0.1)
    resumed = Scheduler(resumed_opt, build())  # type: ignore[operator]
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 7
    assert [g["lr"] for g in resumed_opt.param_groups] == [g["lr"] for g in opt.param_groups]


def test_a_different_long_schedule_is_named_in_a_short_message() -> None:
    sched = Scheduler(two_groups(torch.optim.SGD, lr=0.1), _long())
    other = Scheduler(two_groups(torch.optim.SGD, lr=0.1), _long() * 2.0)
    with pytest.raises(ValueError, match="group 0: saved schedule") as info:
        other.load_state_dict(sched.state_dict())
    assert len(str(info.value)) < 2000
    other.load_state_dict(sched.state_dict(), schedule_changed_ok=True)
    short = Scheduler(two_groups(torch.optim.SGD, lr=0.1), ss.constant(0.5))
    with pytest.raises(ValueError, match="different schedule") as info:
        short.load_state_dict({**short.state_dict(), "schedules": [repr(COSINE), None]})
    assert "group 0" in str(info.value) and "group 1: saved None" in str(info.value)
