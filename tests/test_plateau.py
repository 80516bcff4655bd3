"""Reduce on plateau: the pure controller, ss.torch.Scheduler.step(metric), the compat names
(against the real torch, transformers and timm), resume, distributed metrics and bad input."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
from steadystep.compat import timm as ctimm  # noqa: E402
from steadystep.compat import torch as ctorch  # noqa: E402
from steadystep.compat import transformers as ctf  # noqa: E402
from steadystep.schedules._plateau import with_reductions  # noqa: E402
from steadystep.torch import PlateauScheduler, Scheduler  # noqa: E402

from ._subprocess import free_port, run_workers  # noqa: E402

METRIC = st.one_of(
    st.sampled_from([1.0, 0.5, 0.9999, 2.0, -1.0, 0.0, math.nan, math.inf, -math.inf]),
    st.floats(-3, 3, allow_nan=False),
)
OPTIONS = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["min", "max"]),
        "factor": st.sampled_from([0.1, 0.5, 0.3, 0.9]),
        "patience": st.integers(0, 3),
        "threshold": st.sampled_from([0.0, 1e-4, 0.1, 0.5]),
        "threshold_mode": st.sampled_from(["rel", "abs"]),
        "cooldown": st.integers(0, 3),
        "min_lr": st.sampled_from([0.0, 1e-3, [1e-3, 0.02], [0.0, 0.5]]),
        "eps": st.sampled_from([1e-8, 0.0, 1e-3, 0.05]),
    }
)
LRS = [0.1, 0.03]


def optimizer(lrs: list[float] = LRS) -> torch.optim.Optimizer:
    lin = torch.nn.Linear(2, 1)
    return torch.optim.SGD(
        [{"params": [lin.weight], "lr": lrs[0]}, {"params": [lin.bias], "lr": lrs[1]}]
    )


def lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [g["lr"] for g in opt.param_groups]


# -- the torch anchor ---------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(OPTIONS, st.lists(METRIC, max_size=40), st.integers(0, 40))
def test_matches_torch_bit_for_bit_and_resumes(
    opts: dict[str, Any], metrics: list[float], cut: int
) -> None:
    ref_opt, opt = optimizer(), optimizer()
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, **opts)
    ours = Scheduler(opt, ctorch.ReduceLROnPlateau(LRS, **opts))
    saved = None
    for i, m in enumerate(metrics):
        if i == cut:
            saved = json.loads(json.dumps(ours.state_dict()))
        ref.step(m)
        ours.step(m)
        assert lrs(opt) == lrs(ref_opt), (i, m)
        assert ours.plateau_state.best == ref.best or math.isnan(ref.best)
        assert ours.plateau_state.num_bad_epochs == ref.num_bad_epochs
        assert ours.plateau_state.cooldown_counter == ref.cooldown_counter
    if saved is None:
        return
    # a fresh scheduler loaded from the JSON'd state replays the rest identically
    opt2 = optimizer()
    resumed = Scheduler(opt2, ctorch.ReduceLROnPlateau(LRS, **opts))
    resumed.load_state_dict(saved)
    for m in metrics[cut:]:
        resumed.step(m)
    assert lrs(opt2) == lrs(opt)
    assert resumed.state_dict() == ours.state_dict()


def test_nan_metric_counts_as_bad_like_torch() -> None:
    p = ss.plateau(ss.constant(1.0), patience=1)
    state = p.initial_state()
    state, _ = p.update(state, 1.0)
    state, r1 = p.update(state, math.nan)
    state, r2 = p.update(state, math.nan)
    assert (state.best, r1, r2) == (1.0, False, True)


def test_tensor_metric_and_counts() -> None:
    opt = optimizer()
    s = Scheduler(opt, ss.plateau(ss.constant(0.1), patience=0, factor=0.5))
    for _ in range(3):
        opt.param_groups[0]["params"][0].grad = torch.ones(1, 2)
        opt.step()
        s.step()
    s.step(torch.tensor(1.0))
    s.step(torch.tensor([2.0]))
    assert s.last_epoch == 3  # evaluations are not updates
    assert s.plateau_state.evaluations == 2 and s.reductions == [1, 1]
    assert lrs(opt) == [0.05, 0.05]


# -- composition --------------------------------------------------------------------------------
def test_warmup_then_plateau_over_cosine_with_floor() -> None:
    body = ss.plateau(ss.cosine(1.0, 0.1, steps=100), factor=0.5, patience=0, min_lr=0.3)
    sched = ss.warmup(body, steps=10)
    # a reduction applied at step 50 changes the whole plateau part, never the warmup's ramp
    # below its own values, and the floor bounds the reduction, not the cosine
    reduced = with_reductions(sched, 3)
    t = np.arange(0, 130)
    base, low = sched(t), reduced(t)
    assert np.all(low <= base)
    np.testing.assert_array_equal(
        low[10:], np.minimum(base[10:], np.maximum(base[10:] * 0.125, 0.3))
    )
    assert low[-1] == pytest.approx(0.1)  # the cosine ends below min_lr: left alone
    assert ss.parse(repr(reduced)) == reduced and ss.parse(reduced.to_dict()) == reduced


def test_scheduler_warmup_plateau_resume_exact() -> None:
    sched = ss.warmup(ss.plateau(ss.cosine(0.1, 0.0, steps=40), factor=0.5, patience=1), steps=5)

    def run(cut: int | None) -> tuple[list[float], dict[str, Any]]:
        lin = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(lin.parameters(), lr=1.0)
        s = Scheduler(opt, sched)
        used = []
        for i in range(30):
            if cut is not None and i == cut:
                state = json.loads(json.dumps(s.state_dict()))
                lin2 = torch.nn.Linear(2, 1)
                opt = torch.optim.SGD(lin2.parameters(), lr=1.0)
                s = Scheduler(opt, sched)
                s.load_state_dict(state)
                lin = lin2
            lin(torch.ones(2)).sum().backward()
            used.append(opt.param_groups[0]["lr"])
            opt.step()
            opt.zero_grad()
            s.step()
            if i % 3 == 2:
                s.step(1.0)  # never improves: reduces every other evaluation
        return used, s.state_dict()

    full, state = run(None)
    assert run(17) == (full, state)
    assert state["plateau"]["reductions"][0] > 0
    # the warmup part is untouched by reductions triggered during it (they are dropped)
    assert full[:5] == sched(np.arange(5)).tolist()


def test_plateau_scheduler_is_a_reduce_lr_on_plateau() -> None:
    s = PlateauScheduler(optimizer(), ctorch.ReduceLROnPlateau(0.1))
    assert isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau)
    with pytest.raises(ValueError, match="needs a schedule with a plateau"):
        PlateauScheduler(optimizer(), ss.constant(0.1))


# -- compat: transformers and timm ----------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(OPTIONS, st.lists(METRIC, max_size=30))
def test_transformers_reduce_lr_on_plateau(opts: dict[str, Any], metrics: list[float]) -> None:
    transformers = pytest.importorskip("transformers")
    opts = {**opts, "min_lr": 1e-3 if isinstance(opts["min_lr"], list) else opts["min_lr"]}
    ref_opt, opt = optimizer([0.1, 0.1]), optimizer([0.1, 0.1])
    ref = transformers.get_scheduler(
        "reduce_lr_on_plateau", ref_opt, scheduler_specific_kwargs=dict(opts)
    )
    mult = ctf.get_scheduler(
        "reduce_lr_on_plateau", scheduler_specific_kwargs=dict(opts), optimizer=opt
    )
    ours = Scheduler(opt, mult, relative=True)
    for m in metrics:
        ref.step(m)
        ours.step(m)
        # a multiplier times the LR, not the LR times factor: equal within a few ulps
        np.testing.assert_allclose(lrs(opt), lrs(ref_opt), rtol=1e-14)


def _load_timm() -> Any:
    """timm/scheduler/{scheduler,plateau_lr}.py by file path: ``import timm`` needs torchvision."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("timm not installed")
    root = Path(spec.submodule_search_locations[0]) / "scheduler"
    pkg = types.ModuleType("_timm_sched")
    pkg.__path__ = [str(root)]
    sys.modules.setdefault("_timm_sched", pkg)
    for name in ("scheduler", "plateau_lr"):
        full = f"_timm_sched.{name}"
        if full not in sys.modules:
            s = importlib.util.spec_from_file_location(full, root / f"{name}.py")
            assert s is not None and s.loader is not None
            mod = importlib.util.module_from_spec(s)
            sys.modules[full] = mod
            s.loader.exec_module(mod)
    return sys.modules["_timm_sched.plateau_lr"]


@pytest.mark.filterwarnings("ignore:PlateauLRScheduler is deprecated:FutureWarning")
@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 4),
    st.sampled_from([0.0, 1e-4]),
    st.sampled_from(["min", "max"]),
    st.integers(0, 2),
    st.integers(0, 2),
    st.lists(METRIC, max_size=25),
)
def test_timm_plateau_with_warmup(
    warmup_t: int, init: float, mode: str, patience: int, cooldown: int, metrics: list[float]
) -> None:
    plateau_lr = _load_timm()
    opt = optimizer([0.1, 0.1])
    kw = dict(patience_t=patience, cooldown_t=cooldown, warmup_t=warmup_t, mode=mode, lr_min=1e-3)
    ref = plateau_lr.PlateauLRScheduler(opt, decay_rate=0.5, warmup_lr_init=init, **kw)
    ours = ctimm.PlateauLRScheduler(0.1, decay_rate=0.5, warmup_lr_init=init, **kw)
    rule = ss.find_plateau(ours)
    state = rule.initial_state()
    np.testing.assert_allclose(opt.param_groups[0]["lr"], ours(0), rtol=1e-12)
    for epoch, m in enumerate(metrics, start=1):  # timm's loop: step(epoch + 1, metric)
        ref.step(epoch, m)
        state, reduce = rule.update(state, m)
        if reduce:
            ours = ss.apply_reduction(ours, epoch)
            rule = ss.find_plateau(ours)
        np.testing.assert_allclose(opt.param_groups[0]["lr"], ours(epoch), rtol=1e-12)


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (
            {"mode": "minimum"},
            "Argument `mode` must be one of 'min', 'max'. Received: mode='minimum'",
        ),
        ({"threshold_mode": "pct"}, "Argument `threshold_mode`"),
        ({"patience": -1}, r"Argument `patience` must be >= 0. Received: patience=-1"),
        ({"cooldown": -2}, "Argument `cooldown` must be >= 0"),
        ({"factor": 1.0}, r"Argument `factor` must be > 0 and < 1. Received: factor=1.0"),
        ({"factor": 0.0}, "Argument `factor`"),
        ({"min_lr": -1e-3}, "Argument `min_lr` must be >= 0"),
        ({"eps": math.nan}, "Argument `eps`"),
        ({"threshold": -0.1}, "Argument `threshold`"),
    ],
)
def test_bad_options(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ss.plateau(ss.constant(0.1), **kw)


def test_bad_types_and_structure() -> None:
    with pytest.raises(TypeError, match="`patience` must be an integer"):
        ss.plateau(ss.constant(0.1), patience=1.5)
    with pytest.raises(ValueError, match="must not contain another plateau"):
        ss.plateau(ss.plateau(ss.constant(0.1)))
    with pytest.raises(ValueError, match="share one rule"):
        Scheduler(
            optimizer(), [ss.plateau(ss.constant(0.1)), ss.plateau(ss.constant(0.1), patience=2)]
        )
    s = Scheduler(optimizer(), ss.plateau(ss.constant(0.1)))
    for bad in ("1.0", [1.0, 2.0], True, object()):
        with pytest.raises(TypeError, match="Argument `metric`"):
            s.step(bad)
    assert s.plateau_state.evaluations == 0  # nothing was counted


def test_metric_without_plateau_is_refused() -> None:
    s = Scheduler(optimizer(), ss.constant(0.1))
    with pytest.raises(TypeError, match="none of its schedules has a metric-driven part"):
        s.step(0.5)
    assert "plateau" not in s.state_dict()


def test_state_loaded_into_a_different_controller() -> None:
    a = Scheduler(optimizer(), ss.plateau(ss.constant(0.1), patience=1))
    a.step(1.0)
    state = a.state_dict()
    with pytest.raises(ValueError, match="no plateau"):
        Scheduler(optimizer(), ss.constant(0.1)).load_state_dict(state, schedule_changed_ok=True)
    other = Scheduler(optimizer(), ss.plateau(ss.constant(0.1), patience=1, mode="max"))
    with pytest.raises(ValueError, match="different controller"):
        other.load_state_dict(state, schedule_changed_ok=True)
    plain = Scheduler(optimizer(), ss.constant(0.1)).state_dict()
    b = Scheduler(optimizer(), ss.plateau(ss.constant(0.1), patience=1))
    b.step(3.0)
    before = b.state_dict()
    plain["schedules"] = before["schedules"]
    with pytest.raises(ValueError, match="holds no plateau state"):
        b.load_state_dict(plain)
    corrupt = json.loads(json.dumps(state))
    corrupt["plateau"]["state"]["num_bad_epochs"] = -1
    with pytest.raises(ValueError, match="num_bad_epochs"):
        b.load_state_dict(corrupt)
    corrupt["plateau"]["state"] = {"best": 1.0}
    with pytest.raises(ValueError, match="plateau state with keys"):
        b.load_state_dict(corrupt)
    assert b.state_dict() == before  # a refused load changes nothing


def test_transformers_compat_refuses_what_it_cannot_mirror() -> None:
    with pytest.raises(ValueError, match="ignores `num_warmup_steps`"):
        ctf.get_scheduler("reduce_lr_on_plateau", num_warmup_steps=10)
    with pytest.raises(ValueError, match="lr_init"):
        ctf.get_scheduler("reduce_lr_on_plateau", scheduler_specific_kwargs={"min_lr": 1e-5})
    with pytest.raises(TypeError, match="unknown"):
        ctf.get_scheduler("reduce_lr_on_plateau", scheduler_specific_kwargs={"patients": 3})


# -- distributed: 2 gloo ranks with different local metrics take the same decision ---------------
WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import steadystep as ss
    from steadystep.torch import Scheduler

    rank, port = int(sys.argv[1]), int(sys.argv[2])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    s = Scheduler(opt, ss.plateau(ss.constant(0.1), patience=1), process_group=dist.group.WORLD)
    local = [[1.0, 0.9, 1.2, 1.1, 1.3], [1.0, 1.3, 0.7, 0.8, 0.6]][rank]
    lrs = []
    for m in local:
        s.step(m if rank else torch.tensor(m))
        lrs.append(opt.param_groups[0]["lr"])
    # loss-aware skipping: a bad batch on rank 1 only skips the update on both ranks
    w = torch.nn.Parameter(torch.ones(2))
    sgd = torch.optim.SGD([w], lr=0.1)
    guard = ss.torch.LossSpikeSkip([w], signal="loss", window=8, min_history=3, optimizer=sgd,
                                   process_group=dist.group.WORLD)
    skipped = []
    for i, loss in enumerate([1.0, 1.1, 0.9, 1.0, 40.0 if rank else 1.0, 1.0]):
        w.grad = torch.ones(2)
        skipped.append(bool(guard.check(torch.tensor(loss))))
        sgd.step()
    out = {"lrs": lrs, "state": s.plateau_state.to_dict(), "skipped": skipped, "w": w.tolist()}
    print("RESULT" + json.dumps(out), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)
    """
)


def test_two_ranks_decide_the_same(tmp_path: Path) -> None:
    if not torch.distributed.is_available():  # pragma: no cover
        pytest.skip("torch.distributed is not available")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = str(free_port())
    results = run_workers([[str(script), str(r), port] for r in range(2)])
    assert results[0] == results[1]
    # single-process twin on the mean metric
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    twin = Scheduler(opt, ss.plateau(ss.constant(0.1), patience=1))
    expected = []
    for a, b in zip([1.0, 0.9, 1.2, 1.1, 1.3], [1.0, 1.3, 0.7, 0.8, 0.6], strict=True):
        twin.step((a + b) / 2)
        expected.append(opt.param_groups[0]["lr"])
    assert results[0]["lrs"] == expected
    assert expected[-1] < 0.1  # the mean plateaus, so it reduced (rank 1 alone would not have)
    assert results[0]["skipped"] == [False] * 4 + [True, False]
