"""Sparse COO gradients (``nn.Embedding(sparse=True)``): clipped exactly, compared with
``torch.nn.utils.clip_grad_norm_`` on a dense twin (torch itself raises on sparse gradients)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

import steadystep.torch as sst  # noqa: E402

IDS = torch.tensor([1, 2, 2, 7, 2])  # repeated rows: the gradient is not coalesced


def _model(sparse: bool) -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=sparse), torch.nn.Linear(4, 1))


def _backward(model: Any, scale: float = 3.0) -> None:
    (model(IDS).sum() * scale).backward()


def _pair() -> tuple[Any, Any]:
    sparse, dense = _model(True), _model(False)
    _backward(sparse)
    _backward(dense)
    assert sparse[0].weight.grad.is_sparse and not sparse[0].weight.grad.is_coalesced()
    return sparse, dense


def _dense_grads(model: Any) -> list[Any]:
    return [p.grad.to_dense() for p in model.parameters()]


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_equals_torch_on_a_dense_twin(max_norm: float) -> None:
    sparse, dense = _pair()
    got = sst.clip_grad_norm_(sparse.parameters(), max_norm)
    want = torch.nn.utils.clip_grad_norm_(dense.parameters(), max_norm)
    torch.testing.assert_close(got, want)
    assert sparse[0].weight.grad.is_sparse  # still sparse, for sparse-aware optimizers
    for a, b in zip(_dense_grads(sparse), _dense_grads(dense), strict=True):
        torch.testing.assert_close(a, b)


def test_read_only_norms_and_value_clipping() -> None:
    sparse, dense = _pair()
    torch.testing.assert_close(
        sst.grad_norm(sparse.parameters()), torch.nn.utils.get_total_norm(_dense_grads(dense))
    )
    parts = sst.grad_norms(sparse)
    torch.testing.assert_close(parts["grad/norm/0.weight"], dense[0].weight.grad.norm())
    sst.clip_grad_value_(sparse.parameters(), 0.5)
    torch.nn.utils.clip_grad_value_(dense.parameters(), 0.5)
    for a, b in zip(_dense_grads(sparse), _dense_grads(dense), strict=True):
        torch.testing.assert_close(a, b)


def test_training_with_sgd_matches_the_dense_twin() -> None:
    sparse, dense = _model(True), _model(False)
    opt_s = torch.optim.SGD(sparse.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(dense.parameters(), lr=0.1)
    for step in range(6):
        scale = 60.0 if step == 4 else 3.0  # a spike at step 4
        for model, opt in ((sparse, opt_s), (dense, opt_d)):
            opt.zero_grad()
            _backward(model, scale)
        sst.clip_grad_norm_(sparse.parameters(), 5.0)
        torch.nn.utils.clip_grad_norm_(dense.parameters(), 5.0)
        opt_s.step()
        opt_d.step()
    for a, b in zip(sparse.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("make", [sst.AutoClip, sst.ZClip, sst.SpikeSkip])
def test_adaptive_clippers_see_the_true_norm(make: Any) -> None:
    sparse, dense = _pair()
    norm = make(sparse.parameters()).clip()
    torch.testing.assert_close(norm, torch.nn.utils.get_total_norm(_dense_grads(dense)))


def test_grad_buffer_falls_back_to_reading_the_sparse_gradient() -> None:
    sparse, dense = _model(True), _model(False)
    buf = sst.contiguous_grads(sparse)
    _backward(sparse)
    _backward(dense)
    got = sst.clip_grad_norm_(buf, 0.5)
    torch.testing.assert_close(got, torch.nn.utils.clip_grad_norm_(dense.parameters(), 0.5))
    for a, b in zip(_dense_grads(sparse), _dense_grads(dense), strict=True):
        torch.testing.assert_close(a, b)


def test_unfreezing_and_hand_set_sparse_gradients_between_steps() -> None:
    """A buffer built from the model while the embedding is frozen; then it is unfrozen (a
    sparse gradient appears outside the buffer), then its gradient is replaced by hand."""
    sparse, dense = _model(True), _model(False)
    for model in (sparse, dense):
        model[0].weight.requires_grad_(False)
    buf = sst.contiguous_grads(sparse)
    for step in range(3):
        if step == 1:
            for model in (sparse, dense):
                model[0].weight.requires_grad_(True)
        for model in (sparse, dense):
            model.zero_grad()
            _backward(model, 3.0 + step)
        if step == 2:
            sparse[0].weight.grad = sparse[0].weight.grad * 2.0  # a new sparse tensor
            dense[0].weight.grad = dense[0].weight.grad * 2.0
        got = sst.clip_grad_norm_(buf, 0.5)
        want = torch.nn.utils.clip_grad_norm_(dense.parameters(), 0.5)
        torch.testing.assert_close(got, want)
        for p, q in zip(sparse.parameters(), dense.parameters(), strict=True):
            assert (p.grad is None) == (q.grad is None)
            if p.grad is not None:
                torch.testing.assert_close(p.grad.to_dense(), q.grad)


def test_non_finite_sparse_gradient_is_skipped() -> None:
    sparse, _ = _pair()
    opt = torch.optim.SGD(sparse.parameters(), lr=0.1)
    grad = sparse[0].weight.grad.coalesce()
    grad._values()[0, 0] = float("inf")
    sparse[0].weight.grad = grad
    before = [p.detach().clone() for p in sparse.parameters()]
    assert not torch.isfinite(sst.clip_grad_norm_(sparse.parameters(), 1.0, nonfinite="skip"))
    opt.step()
    for a, b in zip(sparse.parameters(), before, strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_agc_and_other_layouts_are_refused_clearly() -> None:
    sparse, _ = _pair()
    opt = torch.optim.SGD(sparse.parameters(), lr=0.1)
    agc = sst.AGC(sparse.parameters(), nonfinite="skip", optimizer=opt)
    grad = sparse[0].weight.grad
    with pytest.raises(TypeError, match="AGC clips dense gradients only"):
        agc.clip()
    # refused before any work: the gradient untouched, nothing recorded or armed
    assert sparse[0].weight.grad is grad and not grad.is_coalesced()
    assert agc.last is None
    w = torch.nn.Parameter(torch.eye(3).to_sparse_csr())
    w.grad = torch.eye(3).to_sparse_csr()
    with pytest.raises(TypeError, match=r"layout torch\.sparse_csr"):
        sst.clip_grad_norm_([w], 1.0)
