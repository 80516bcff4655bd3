"""Distributed-clipping arguments in one process, and DeepSpeed's optimizer interface.

The multi-process behaviour is in ``test_clip_distributed.py`` (2 ranks) and
``test_clip_distributed_mesh.py`` (4 ranks). DeepSpeed's documented interface is driven
through stand-ins: an engine whose ``.optimizer`` is a wrapper (not a
``torch.optim.Optimizer``) holding the torch optimizer in ``.optimizer``, with ``clip_grad``
and ``get_global_grad_norm()``, as in ``deepspeed/runtime/zero/stage_1_and_2.py`` and
``deepspeed/runtime/engine.py`` (deepspeedai/DeepSpeed@edaa7221); where DeepSpeed is
installed, a real ZeRO-1/2 engine on CPU (``_deepspeed_worker.py``) too.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
import steadystep.torch as sst  # noqa: E402
from steadystep.torch import _distributed as dist_rules  # noqa: E402

from ._subprocess import free_port, run_workers  # noqa: E402


def _params(*grads: list[float]) -> list[Any]:
    out = []
    for g in grads:
        q = torch.nn.Parameter(torch.zeros(len(g)))
        q.grad = torch.tensor(g)
        out.append(q)
    return out


def test_pairs_without_groups_count_every_parameter_once() -> None:
    a, b, c = _params([3.0], [4.0], [12.0])
    res = sst.clip_grad_norm_([a, b, c], 1.0, process_group=[([a, b], None), ([c], None)])
    assert float(res) == pytest.approx(13.0)
    assert float(c.grad) == pytest.approx(12.0 / (13.0 + 1e-6))


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (lambda a, b: [([a], None)], "1 parameters with a gradient in no pair"),
        (lambda a, b: [([a, b], None), ([b], None)], "two pairs"),
        (lambda a, b: [([a, b], None), ([torch.nn.Parameter(torch.ones(1))], None)], "1 pair"),
        (lambda a, b: [a, b], "(parameters, group) pairs"),
    ],
)
def test_bad_pairs_are_refused(pairs: Any, message: str) -> None:
    a, b = _params([1.0], [2.0])
    with pytest.raises((TypeError, ValueError), match=re.escape(message)):
        sst.clip_grad_norm_([a, b], 1.0, process_group=pairs(a, b))
    assert a.grad.tolist() == [1.0]  # nothing touched


def test_agree_argument() -> None:
    (a,) = _params([3.0, 4.0])
    for bad in (None, 1, "world", [1]):
        with pytest.raises(TypeError, match="Argument `agree`"):
            sst.clip_grad_norm_([a], 1.0, agree=bad)
        with pytest.raises(TypeError, match="Argument `agree`"):
            sst.ZClip([a], agree=bad)
    assert float(sst.clip_grad_norm_([a], 1.0, agree=False)) == 5.0
    # one process: agree() is the identity (no collective without torch.distributed)
    flag = torch.tensor(True)
    assert dist_rules.agree(flag) is flag


# --------------------------------------------------------------------------- DeepSpeed


class ZeroOptimizerLike:
    """DeepSpeed's ZeRO wrapper, as far as the interface goes: not an Optimizer, the torch
    optimizer in ``.optimizer``, its param groups exposed, ``clip_grad`` applied inside
    ``step()``, a step with a non-finite norm skipped without stepping the inner optimizer
    (fp16 overflow), the norm kept in ``_global_grad_norm``."""

    def __init__(self, optimizer: torch.optim.Optimizer, clip_grad: float = 0.0) -> None:
        self.optimizer = optimizer
        self.clip_grad = clip_grad
        self._global_grad_norm: Any = 0.0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def step(self) -> None:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self._global_grad_norm = norm
        if not torch.isfinite(norm):
            return  # overflow: DeepSpeed skips the step
        if self.clip_grad > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.clip_grad, norm)
        self.optimizer.step()


class EngineLike:
    def __init__(self, wrapper: ZeroOptimizerLike) -> None:
        self.optimizer = wrapper

    def get_global_grad_norm(self) -> Any:
        return self.optimizer._global_grad_norm


def test_scheduler_takes_deepspeed_optimizer_wrapper() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    inner = torch.optim.SGD([w], lr=1.0)
    engine = EngineLike(ZeroOptimizerLike(inner))
    for target in (engine.optimizer, engine):
        sched = sst.Scheduler(target, ss.linear(1.0, 0.0, 4))
        assert sched.optimizer is inner
    grads = [[1.0, 1.0], [math.inf, 1.0], [1.0, 1.0]]
    lrs = []
    for g in grads:
        w.grad = torch.tensor(g)
        engine.optimizer.step()
        sched.step()
        lrs.append(inner.param_groups[0]["lr"])
    # the overflow step made no update, so the schedule did not advance for it
    assert lrs == pytest.approx([0.75, 0.75, 0.5])
    with pytest.raises(TypeError, match="Argument `optimizer`"):
        sst.Scheduler(object(), ss.constant(1.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: sst.AutoClip(p, percentile=50.0, history=4),
        lambda p: sst.ZClip(p, warmup_steps=3),
        lambda p: sst.SpikeSkip(p, window=8, min_history=3, max_norm=3.0),
    ],
    ids=["autoclip", "zclip", "spikeskip"],
)
def test_observe_deepspeed_norm_equals_clip(make: Any) -> None:
    norms = [1.0, 1.2, 0.9, 1.1, 1.0, 9.0, math.inf, 1.0]
    (q,) = _params([0.0])
    by_clip, by_observe = make([q]), make([q])
    for n in norms:
        q.grad = torch.tensor([n])
        by_clip.clip()
        grad = q.grad
        res = by_observe.observe(torch.tensor(n))
        assert q.grad is grad  # observe reads and changes no gradient
        for got, ref in zip(res, by_clip.last, strict=True):
            assert torch.equal(got, ref) or (got.isnan() & ref.isnan()).all()
    for key, value in by_clip.state_dict().items():
        other = by_observe.state_dict()[key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


def test_observe_feeds_deepspeed_clip_grad() -> None:
    w = torch.nn.Parameter(torch.zeros(1))
    engine = EngineLike(ZeroOptimizerLike(torch.optim.SGD([w], lr=1.0)))
    clipper = sst.AutoClip([w], percentile=50.0, history=4)
    for g in [1.0, 3.0, 2.0, 10.0]:
        w.grad = torch.tensor([g])
        engine.optimizer.step()
        res = clipper.observe(engine.get_global_grad_norm())
        engine.optimizer.clip_grad = float(res.threshold)
    # the threshold after [1, 3, 2, 10]: the median of the last four norms
    assert engine.optimizer.clip_grad == pytest.approx(2.5)
    assert float(clipper.last.norm) == 10.0


def test_observe_bad_input() -> None:
    (q,) = _params([1.0])
    clipper = sst.ZClip([q])
    with pytest.raises(TypeError, match="Argument `norm`"):
        clipper.observe("1.0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Argument `norm`"):
        clipper.observe(torch.ones(2))
    with pytest.raises(TypeError, match=r"AGC\.observe"):
        sst.AGC([q]).observe(1.0)


@pytest.mark.parametrize("stage", [1, 2])
def test_real_deepspeed_if_installed(stage: int) -> None:
    """DeepSpeed's ZeRO engine on CPU: the Scheduler drives the torch optimizer inside its
    wrapper, AutoClip learns from DeepSpeed's norm (the true norm of the plain twin)."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    worker = Path(__file__).with_name("_deepspeed_worker.py")
    (out,) = run_workers([[str(worker), str(free_port()), str(stage)]], timeout=300)
    assert out["wrapper_is_optimizer"] is False  # DeepSpeedZeroOptimizer wraps the torch one
    norms = [row[0] for row in out["steps"]]
    assert norms == pytest.approx([row[1] for row in out["steps"]], rel=1e-5)
    # the AutoClip threshold: the median of the norms so far; the LR one step per update
    thresholds = [row[2] for row in out["steps"]]
    medians = [norms[0], (norms[0] + norms[1]) / 2, sorted(norms)[1]]
    assert thresholds == pytest.approx(medians, rel=1e-6)
    assert [row[3] for row in out["steps"]] == pytest.approx([0.09, 0.08, 0.07])
