"""``steadystep.torch.find_lr``: the LR range test sweeps, stops, suggests and restores exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import steadystep as ss  # noqa: E402
from steadystep.torch._find_lr import suggest  # noqa: E402


def _problem(seed: int = 0) -> tuple[torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    batches = []
    for _ in range(4):
        x = torch.randn(32, 8, generator=gen)
        batches.append((x, x.sum(1, keepdim=True)))
    return model, batches


def mse(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return ((model(batch[0]) - batch[1]) ** 2).mean()


def _warm_up(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list) -> None:
    for batch in batches:  # give the optimizer real state (Adam moments, step counts)
        opt.zero_grad()
        mse(model, batch).backward()
        opt.step()


OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1),
    "sgd": lambda params: torch.optim.SGD(params, lr=1e-2, momentum=0.9),
}


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_restores_model_and_optimizer_bitwise(kind: str) -> None:
    model, batches = _problem()
    opt = OPTIMIZERS[kind](model.parameters())
    _warm_up(model, opt, batches)
    model[1].eval()  # a mixed train/eval state must survive too
    params = {k: v.clone() for k, v in model.state_dict().items()}
    state = {
        i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
        for i, s in enumerate(opt.state.values())
    }
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()

    result = ss.torch.find_lr(model, opt, mse, batches, start_lr=1e-5, end_lr=1e2, num_steps=40)
    assert len(result.lrs) > 10

    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    for i, s in enumerate(opt.state.values()):
        for k, v in s.items():
            assert torch.equal(v, state[i][k]) if torch.is_tensor(v) else v == state[i][k]
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert [m.training for m in model.modules()] == [True, True, False, True, True]
    assert torch.equal(torch.get_rng_state(), rng)

    # and training continues exactly as if the test had never run
    twin, _ = _problem()
    twin_opt = OPTIMIZERS[kind](twin.parameters())
    _warm_up(twin, twin_opt, batches)
    twin[1].eval()
    for m, o in ((model, opt), (twin, twin_opt)):
        o.zero_grad()
        mse(m, batches[0]).backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_restores_after_an_exception() -> None:
    model, batches = _problem()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = 0

    def failing(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return mse(m, batch)

    with pytest.raises(KeyboardInterrupt):
        ss.torch.find_lr(model, opt, failing, batches, num_steps=20)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert opt.state_dict()["state"] == {} and opt.param_groups[0]["lr"] == 1e-3


def test_tensor_lr_is_restored_in_place() -> None:
    model, batches = _problem()
    lr = torch.tensor(0.01)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ss.torch.find_lr(model, opt, mse, batches, num_steps=10)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.01)


def test_sweep_is_exponential_and_smoothing_is_bias_corrected() -> None:
    model, batches = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = ss.torch.find_lr(
        model, opt, mse, batches, start_lr=1e-6, end_lr=1e-3, num_steps=31, smooth=0.2
    )
    assert not result.stopped_early and len(result.lrs) == 31  # tiny LRs: no divergence
    np.testing.assert_allclose(result.lrs, np.logspace(-6, -3, 31), rtol=1e-12)
    avg, expected = 0.0, []
    for i, loss in enumerate(result.losses):
        avg = 0.8 * avg + 0.2 * loss
        expected.append(avg / (1 - 0.8 ** (i + 1)))
    np.testing.assert_allclose(result.smoothed, expected, rtol=1e-12)
    assert result.smoothed[0] == pytest.approx(result.losses[0])


def test_stops_on_divergence_and_suggests_below_it() -> None:
    model, batches = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = ss.torch.find_lr(model, opt, mse, batches, start_lr=1e-5, end_lr=1e3, num_steps=100)
    assert result.stopped_early and len(result.lrs) < 100
    last = result.smoothed[-1]
    assert not math.isfinite(last) or last > 4 * min(result.smoothed[:-1])
    assert result.suggestion is not None
    assert result.lrs[0] < result.suggestion < result.lrs[-1]
    assert result.min_loss_lr < result.lrs[-1]
    assert "suggested max lr" in result.summary()


def test_suggestion_is_the_steepest_descent() -> None:
    lrs = list(np.logspace(-5, 0, 50))
    # loss flat, then falling fastest around index 30, then rising
    x = np.arange(50)
    smoothed = list(3 - 2 / (1 + np.exp(-(x - 30) / 2.0)) + np.where(x > 40, (x - 40) ** 2, 0))
    assert suggest(lrs, smoothed, 10, 5) == pytest.approx(lrs[30])
    assert suggest(lrs[:12], smoothed[:12], 10, 5) is None  # too short


def test_plot(tmp_path: object) -> None:
    pytest.importorskip("matplotlib")
    model, batches = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = ss.torch.find_lr(model, opt, mse, batches, start_lr=1e-5, end_lr=1e3, num_steps=60)
    fig = result.plot()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.get_lines()) == 3  # raw, smoothed, suggestion


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"start_lr": 0.0}, ValueError, "start_lr=0.0"),
        ({"start_lr": 1.0, "end_lr": 0.1}, ValueError, "`end_lr` must be > `start_lr`"),
        ({"num_steps": 1}, ValueError, "num_steps=1"),
        ({"num_steps": 2.5}, TypeError, "num_steps=2.5"),
        ({"smooth": 1.5}, ValueError, "smooth=1.5"),
        ({"diverge_factor": 1.0}, ValueError, "diverge_factor=1.0"),
        ({"skip_start": -1}, ValueError, "skip_start=-1"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    model, batches = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(error, match=message.replace("(", r"\(").replace("`", "`")):
        ss.torch.find_lr(model, opt, mse, batches, **kwargs)


def test_empty_data() -> None:
    model, _ = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="`data` yielded no batches"):
        ss.torch.find_lr(model, opt, mse, [])


def test_a_short_iterator_ends_the_sweep() -> None:
    model, batches = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = ss.torch.find_lr(model, opt, mse, iter(batches), start_lr=1e-6, end_lr=1e-5)
    assert len(result.lrs) == 4  # an iterator cannot restart; a list (re-iterable) does
    result = ss.torch.find_lr(model, opt, mse, batches, start_lr=1e-6, end_lr=1e-5, num_steps=9)
    assert len(result.lrs) == 9
