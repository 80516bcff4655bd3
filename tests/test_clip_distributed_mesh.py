"""Distributed clipping on the meshes people run: 4 gloo ranks against one process.

One world of 4 CPU processes (``tests/_mesh_worker.py``) runs every layout: FSDP2 over
tensor parallelism (a ``("dp", "tp")`` mesh: the ``_StridedShard`` case), HSDP, TP alone,
a 3-D ``(dp_replicate, dp_shard, tp)`` mesh, expert parallelism through
``(parameters, group)`` pairs, and FSDP1 with and without ``use_orig_params``. Each is
compared here with the same model in one process (norm for p = 2, 1, inf, coefficient,
every clipped gradient, ZClip / AutoClip / SpikeSkip over a run with a spike, AGC), on
every rank, and the collectives of each clip are counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import steadystep.torch as sst  # noqa: E402

from . import _mesh_worker as w  # noqa: E402
from ._subprocess import free_port, run_workers  # noqa: E402

RANKS = 4
ALL_REDUCE = "c10d.allreduce_"


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    """The 4 ranks' results (one world for the whole module)."""
    port = str(free_port())
    worker = str(Path(w.__file__).resolve())
    return run_workers([[worker, str(rank), port] for rank in range(RANKS)], timeout=300)


def _grads(params: list[Any]) -> list[Any]:
    return [q.grad.clone() for q in params]


def _reference(batches: list[int]) -> tuple[list[Any], list[Any]]:
    """The single-process model on the averaged loss: (parameters, gradients)."""
    model = w.make_model()
    w.loss(model, batches).backward()
    params = list(model.parameters())
    return params, _grads(params)


def _check_norms(
    results: list[dict[str, Any]],
    name: str,
    params: list[Any],
    base: list[Any],
    collectives: int,
    rank_grads: Any = None,
) -> None:
    for pname, p in w.NORMS:
        for q, b in zip(params, base, strict=True):
            q.grad = b.clone()
        ref = sst.clip_grad_norm_(params, 0.5, p, return_result=True)
        clipped = [q.grad.flatten().tolist() for q in params]
        got = [out[f"{name}_{pname}"] for out in results]
        for rank, res in enumerate(got):
            assert res["norm"] == pytest.approx(float(ref.norm), rel=1e-5), (name, pname, rank)
            assert res["coef"] == pytest.approx(float(ref.coefficient), rel=1e-5), (name, pname)
            expected = clipped if rank_grads is None else rank_grads(clipped, rank)
            for g, e in zip(res["grads"], expected, strict=True):
                assert g == pytest.approx(e, rel=1e-4, abs=1e-6), (name, pname, rank)
            # one all-reduce per reduced mesh dimension or group, plus one for the agreement
            assert res["comm"] == {ALL_REDUCE: collectives}, (name, pname, rank)
        # one decision: the very same norm on every rank
        assert len({res["norm"] for res in got}) == 1, (name, pname)


def _check_clippers(
    results: list[dict[str, Any]], name: str, params: list[Any], base: list[Any], pick: Any = None
) -> None:
    ref = w.run_clippers(sst, params, base)
    for rank, out in enumerate(results):
        got = out[f"{name}_clippers"]
        for kind in ("zclip", "autoclip", "spike"):
            for step, (row, ref_row) in enumerate(zip(got[kind], ref[kind], strict=True)):
                assert row[:3] == pytest.approx(ref_row[:3], rel=1e-5), (name, kind, step)
                assert row[3] == ref_row[3], (name, kind, step)
            assert got[kind] == results[0][f"{name}_clippers"][kind]  # identical on all ranks
        assert any(row[3] for row in ref["spike"])  # the spike was skipped ...
        assert any(row[2] < 1 for row in ref["zclip"])  # ... and clipped by ZClip
        assert got["agc_norm"] == pytest.approx(ref["agc_norm"], rel=1e-5)
        expected = ref["agc_grads"] if pick is None else pick(ref["agc_grads"], rank)
        for g, e in zip(got["agc_grads"], expected, strict=True):
            assert g == pytest.approx(e, rel=1e-4, abs=1e-7), (name, rank)


def test_fsdp2_over_tensor_parallel(results: list[dict[str, Any]]) -> None:
    # the first layer's gradients are _StridedShard on dp, which is_shard() does not report
    assert "_StridedShard" in results[0]["fsdp_tp_placements"][0]
    params, base = _reference([0, 1])
    _check_norms(results, "fsdp_tp", params, base, collectives=3)  # dp, tp, agreement
    true = float(torch.nn.utils.get_total_norm(base))
    assert [out["fsdp_tp_torch"] for out in results] == pytest.approx([true] * RANKS, rel=1e-5)
    _check_clippers(results, "fsdp_tp", params, base)


def test_hsdp(results: list[dict[str, Any]]) -> None:
    params, base = _reference([0, 1, 2, 3])
    _check_norms(results, "hsdp", params, base, collectives=2)  # shard dim, agreement
    _check_clippers(results, "hsdp", params, base)


def test_hsdp_nonfinite_in_one_replica_is_one_decision(results: list[dict[str, Any]]) -> None:
    # ranks 2 and 3 (replica group 1) hold a NaN after the gradient reduction
    agreed = [out["hsdp_nan_agree=True"] for out in results]
    assert all(norm != norm and skipped for norm, skipped in agreed)  # NaN, skipped everywhere
    # the same without the agreement: the replica groups decide differently (the bug)
    alone = [out["hsdp_nan_agree=False"] for out in results]
    assert [skipped for _, skipped in alone] == [False, False, True, True]
    # SpikeSkip's non-finite skip (an inf in one replica) drops the gradients on every rank
    assert [out["hsdp_spike_nonfinite"] for out in results] == [[True, True]] * RANKS


def test_tensor_parallel_alone(results: list[dict[str, Any]]) -> None:
    params, base = _reference([0])
    _check_norms(results, "tp", params, base, collectives=2)
    _check_clippers(results, "tp", params, base)


def test_three_dimensional_mesh(results: list[dict[str, Any]]) -> None:
    params, base = _reference([0, 1])
    # dp_replicate is Replicate (not reduced), dp_shard has one rank (nothing to reduce)
    _check_norms(results, "mesh3d", params, base, collectives=2)


def test_expert_parallel_pairs(results: list[dict[str, Any]]) -> None:
    grads = w.dense_grads() + w.expert_grads(0) + w.expert_grads(1)
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]

    def on_rank(clipped: list[Any], rank: int) -> list[Any]:  # dense, then this rank's expert
        return clipped[:2] + clipped[2 + 2 * (rank % 2) : 4 + 2 * (rank % 2)]

    _check_norms(results, "ep", params, grads, collectives=2, rank_grads=on_rank)
    _check_clippers(results, "ep", params, grads, pick=on_rank)
    missing, twice, not_pair = results[0]["ep_errors"]
    assert "2 parameters with a gradient in no pair" in missing
    assert "two pairs" in twice
    assert "(parameters, group) pairs" in not_pair


@pytest.mark.parametrize("orig", [True, False], ids=["use_orig_params", "flat_params"])
def test_fsdp1(results: list[dict[str, Any]], orig: bool) -> None:
    _, base = _reference([0, 1, 2, 3])
    for out in results:
        assert "process_group=model.process_group" in out[f"fsdp1_{orig}_refused"]
    for pname, p in w.NORMS:
        params = [torch.nn.Parameter(torch.zeros_like(b)) for b in base]
        for q, b in zip(params, base, strict=True):
            q.grad = b.clone()
        ref = sst.clip_grad_norm_(params, 0.5, p, return_result=True)
        for out in results:
            res = out[f"fsdp1_{orig}_{pname}"]
            assert res["norm"] == pytest.approx(float(ref.norm), rel=1e-5)
            assert res["coef"] == pytest.approx(float(ref.coefficient), rel=1e-5)
            assert res["fsdp_norm"] == pytest.approx(res["norm"], rel=1e-6)  # FSDP1's own
            assert res["max_diff"] <= 1e-6  # the same clipped gradient shards as FSDP1's
            assert res["comm"] == {ALL_REDUCE: 2}  # the group, the agreement
            # the FSDP1 model itself: its group found, the same clip
            assert res["auto"][:2] == pytest.approx([res["norm"], res["coef"]], rel=1e-6)
            assert res["auto"][2] <= 1e-6
            assert res["auto_comm"] == {ALL_REDUCE: 2}
    l2 = float(torch.nn.utils.get_total_norm(base))
    assert [out[f"fsdp1_{orig}_zclip"] for out in results] == pytest.approx([l2] * RANKS, rel=1e-5)


def test_agree(results: list[dict[str, Any]]) -> None:
    # any rank's True, the largest value, a NaN anywhere; over a sub-group only its ranks
    assert [out["agree"] for out in results] == [
        [True, 3.0, True, True],
        [True, 3.0, True, True],
        [True, 3.0, True, False],
        [True, 3.0, True, False],
    ]
