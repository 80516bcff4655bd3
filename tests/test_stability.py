"""Stability benchmark: harness bookkeeping (no training) and a ``--quick`` end-to-end run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import steadystep as ss
from steadystep.experiments import stability_harness as h

NAN = float("nan")


# ------------------------------------------------------------------ divergence, spikes


def test_diverged_is_nonfinite_or_no_better_than_init() -> None:
    assert not h.is_diverged(2.0, 4.6)
    assert h.is_diverged(NAN, 4.6)
    assert h.is_diverged(float("inf"), 4.6)
    assert h.is_diverged(4.6, 4.6)


def test_spikes_count_every_step_above_the_ema_and_stop_at_nan() -> None:
    flat = [2.0] * 30
    assert h.count_spikes(flat) == 0
    # a 3-step explosion is 3 spikes; the EMA ignores spikes, so the return is not one
    assert h.count_spikes([*flat, 5.0, 6.0, 5.0, *flat]) == 3
    # below the ratio: not a spike
    assert h.count_spikes([*flat, 2.0 * h.SPIKE_RATIO * 0.99, *flat]) == 0
    # before SPIKE_WARMUP steps nothing is compared
    assert h.count_spikes([2.0, 9.0, 2.0]) == 0
    assert h.count_spikes([*flat, 9.0, NAN, 9.0]) == 2


@pytest.mark.parametrize(("kw", "name"), [({"ratio": 1.0}, "ratio"), ({"beta": 1.0}, "beta")])
def test_spike_bad_arguments_name_the_argument(kw: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        h.count_spikes([1.0], **kw)


# ------------------------------------------------------------------ summaries


def _run(lr: float, seed: int, final: float, init: float = 4.0, **kw: object) -> dict[str, object]:
    return {"lr": lr, "seed": seed, "final_loss": final, "init_loss": init, **kw}


def test_summary_counts_diverged_seeds_and_caps_them_at_init() -> None:
    runs = [_run(0.1, 0, 1.0), _run(0.1, 1, 1.2), _run(0.1, 2, NAN), _run(0.1, 3, 9.0)]
    (cell,) = h.summarize(runs, ["lr"])
    assert cell["n_seeds"] == 4 and cell["n_diverged"] == 2
    # capped losses are [1.0, 1.2, 4.0, 4.0]: the diverged runs pull the median up
    assert cell["loss_median"] == pytest.approx(2.6)
    assert cell["loss_q25"] == pytest.approx(np.percentile([1.0, 1.2, 4.0, 4.0], 25))
    assert cell["loss_q75"] == 4.0


def test_summary_groups_by_keys_and_summarises_optional_columns() -> None:
    runs = [
        _run(0.1, 0, 1.0, spikes=1, clip_frac=0.5),
        _run(0.1, 1, 2.0, spikes=3, clip_frac=None),
        _run(1.0, 0, 3.0, spikes=0),
    ]
    cells = {c["lr"]: c for c in h.summarize(runs, ["lr"])}
    assert set(cells) == {0.1, 1.0}
    assert cells[0.1]["spikes_median"] == 2.0
    assert cells[0.1]["clip_frac_median"] == 0.5  # None means "no clipper", not 0
    assert "clip_frac_median" not in cells[1.0]


def test_lr_sensitivity_matches_wortsman_definition() -> None:
    # E_lr[min(loss, init) - loss*] with loss* = min over the grid
    losses = [3.0, 2.0, 2.5, 7.0, NAN]
    expected = np.mean([1.0, 0.0, 0.5, 2.0, 2.0])
    assert h.lr_sensitivity(losses, init_loss=4.0) == pytest.approx(expected)
    assert h.lr_sensitivity([2.0, 2.0], init_loss=4.0) == 0.0
    with pytest.raises(ValueError, match="`losses`"):
        h.lr_sensitivity([], init_loss=4.0)


def test_failed_means_diverged_or_no_better_than_unigram() -> None:
    row = {"final_loss": 2.0, "init_loss": 4.6, "unigram_loss": 3.2}
    assert not h.is_failed(row)
    assert h.is_failed({**row, "final_loss": 3.2})
    assert h.is_failed({**row, "final_loss": NAN})
    assert not h.is_failed({"final_loss": 3.5, "init_loss": 4.6})  # no unigram: divergence only
    (cell,) = h.summarize([{**row, "lr": 1.0}, {**row, "lr": 1.0, "final_loss": 3.3}], ["lr"])
    assert (cell["n_diverged"], cell["n_failed"]) == (0, 1)


def test_largest_stable_lr_ignores_cells_with_any_divergence() -> None:
    cells = [
        {"lr": 0.01, "n_diverged": 0},
        {"lr": 0.1, "n_diverged": 1},
        {"lr": 0.03, "n_diverged": 0},
    ]
    assert h.largest_stable_lr(cells) == 0.03
    assert h.largest_stable_lr([{"lr": 1.0, "n_diverged": 3}]) is None
    # n_failed (diverged or stuck at the unigram loss) takes precedence when present
    failed = [
        {"lr": 0.01, "n_diverged": 0, "n_failed": 0},
        {"lr": 0.1, "n_diverged": 0, "n_failed": 1},
    ]
    assert h.largest_stable_lr(failed) == 0.01


# ------------------------------------------------------------------ running, writing


def _square(task: dict[str, object]) -> dict[str, object]:
    return {"x": task["x"], "y": int(task["x"]) ** 2}  # type: ignore[call-overload]


def test_run_tasks_runs_dependent_tasks_after_their_prerequisites() -> None:
    seen: list[list[int]] = []

    def then(results: list[dict[str, object]]) -> list[dict[str, object]]:
        seen.append(sorted(int(r["x"]) for r in results))  # type: ignore[call-overload]
        return [{"x": 10}]

    rows = h.run_tasks(
        [{"x": 1}, {"x": 2}, {"x": 3}], _square, then=then, then_after=lambda t: t["x"] != 3
    )
    # inline: the dependent task jumps ahead of the rest of the queue
    assert [r["y"] for r in rows] == [1, 4, 100, 9]
    assert seen == [[1, 2]]
    rows = h.run_tasks(
        [{"x": 1}, {"x": 2}, {"x": 3}],
        _square,
        workers=2,
        then=lambda rs: [{"x": 10}],
        then_after=lambda t: t["x"] == 1,
    )
    assert sorted(int(r["y"]) for r in rows) == [1, 4, 9, 100]  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="`workers`"):
        h.run_tasks([], _square, workers=0)


def test_writers_are_strict_json_and_flat_csv(tmp_path: Path) -> None:
    rows = [{"a": 1.0, "b": NAN, "curve": [[0, 1.0]]}, {"a": 2.5, "c": "x"}]
    h.write_json(tmp_path / "r.json", {"runs": rows})
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["runs"][0]["b"] is None and data["runs"][0]["curve"] == [[0, 1.0]]
    h.write_csv(tmp_path / "r.csv", rows)
    with open(tmp_path / "r.csv", newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["a", "b", "c"]  # list-valued columns stay in the JSON
    assert read[1]["a"] == "2.5" and read[0]["c"] == ""
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------ recipes


def test_warmup_recipes_use_steadystep_schedules() -> None:
    from steadystep.experiments import stability as st

    plan = st.FULL
    assert st.warmup_steps("untuned", plan) == 100  # 2 / (1 - 0.98)
    assert st.warmup_steps("linear", plan) == round(0.1 * plan.tf_steps)
    for warmup in ("none", "linear", "untuned"):
        for shape in plan.shapes:
            s = st.tf_schedule(warmup, 1e-3, plan, shape)
            assert s.length == plan.tf_steps
            assert ss.parse(repr(s)) == s
            w = st.warmup_steps(warmup, plan)
            values = s(np.arange(plan.tf_steps))
            assert values.max() == pytest.approx(1e-3)
            if w:
                assert values[0] == 0.0 and values[w] == pytest.approx(1e-3)
    end = plan.tf_steps
    assert st.tf_schedule("none", 1.0, plan, "cosine")(end) == pytest.approx(st.DECAY_FLOOR)
    assert st.tf_schedule("none", 1.0, plan, "wsd")(end) == 0.0
    wsd = st.tf_schedule("linear", 1.0, plan, "wsd")
    assert wsd(end - round(0.2 * end) - 1) == 1.0  # stable until the 20% cooldown


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda st: st.warmup_steps("cosine", st.FULL), "warmup"),
        (lambda st: st.tf_schedule("none", 1e-3, st.FULL, "step"), "shape"),
        (lambda st: st.tf_schedule("untuned", 1e-3, st.QUICK), "warmup"),
        (lambda st: st.make_clipper("clipall", [], st.QUICK), "method"),
    ],
)
def test_bad_recipe_names_the_argument(call: object, name: str) -> None:
    pytest.importorskip("torch")
    from steadystep.experiments import stability as st

    with pytest.raises(ValueError, match=f"`{name}`"):
        call(st)  # type: ignore[operator]


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from steadystep.experiments import stability as st

    for argv in (["--experiments", "5"], ["--experiments", "x"], ["--workers", "0"]):
        with pytest.raises(SystemExit) as exc:
            st.main(argv)
        assert exc.value.code == 2
    assert "--workers" in capsys.readouterr().err


# ------------------------------------------------------------------ clipping rules


def test_clippers_clip_an_exploding_gradient_and_say_so() -> None:
    torch = pytest.importorskip("torch")
    from steadystep.experiments import stability as st

    w = torch.nn.Parameter(torch.ones(4, 4))
    for method in ("global", "autoclip", "zclip", "agc"):
        w.grad = torch.full((4, 4), 0.01)
        clip = st.make_clipper(method, [w], st.QUICK)
        assert clip is not None
        for _ in range(40):  # ZClip needs 25 warm-up norms, AutoClip a history
            w.grad = torch.full((4, 4), 0.01)
            clip()
        w.grad = torch.full((4, 4), 100.0)
        assert clip() is True, method
        assert torch.linalg.vector_norm(w.grad).item() < 100.0 * 4, method
    assert st.make_clipper("none", [w], st.QUICK) is None


# ------------------------------------------------------------------ end to end


def test_quick_run_end_to_end(tmp_path: Path) -> None:
    """``--quick`` writes every output, counts (never drops) the runs it diverges."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from steadystep.experiments import stability as st

    plan = st.QUICK
    assert st.main(["--quick", "--out", str(tmp_path), "--workers", "2"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "stability.json", "stability_runs.csv", "stability_cells.csv", "stability.md",
        "stability_exp1.png", "stability_exp2.png", "stability_exp3.png",
    } <= names  # fmt: skip
    data = json.loads((tmp_path / "stability.json").read_text())
    runs = data["runs"]
    n1 = 2 * len(plan.tf_warmups) * len(plan.tf_lrs) * len(plan.seeds)
    n2 = len(plan.rnn_clips) * len(plan.rnn_lrs) * len(plan.seeds)
    n3 = len(plan.shapes) * len(plan.seeds)
    assert [sum(r["experiment"] == e for r in runs) for e in (1, 2, 3)] == [n1, n2, n3]
    with open(tmp_path / "stability_runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == n1 + n2 + n3
    # the unclipped RNN at lr=100 diverges: every seed is kept and counted
    blown = [r for r in runs if r["experiment"] == 2 and r["clip"] == "none" and r["lr"] == 100]
    assert len(blown) == len(plan.seeds) and all(r["diverged"] for r in blown)
    cells = data["summary"]["exp2"]["cells"]
    cell = next(c for c in cells if c["clip"] == "none" and c["lr"] == 100)
    assert cell["n_seeds"] == len(plan.seeds)
    assert cell["n_diverged"] == cell["n_failed"] == len(plan.seeds)
    assert cell["loss_median"] == pytest.approx(cell["init_loss"], rel=0.05)
    # every run starts near the uniform loss (~103 characters) and reports its numbers
    for r in runs:
        assert math.log(100) < r["init_loss"] < (math.log(110) if r["experiment"] != 2 else 6.0)
        assert r["diverged"] == h.is_diverged(
            NAN if r["final_loss"] is None else r["final_loss"], r["init_loss"]
        )
    for r in (r for r in runs if r["experiment"] == 2 and r["clip"] != "none"):
        assert 0.0 <= r["clip_frac"] <= 1.0
    # experiment 3 ran on experiment 1's best cell, and recorded curves
    best = st.best_setting(
        [{**r, "final_loss": r["final_loss"] or NAN} for r in runs], seed=plan.seeds[0]
    )
    for r in (r for r in runs if r["experiment"] == 3):
        assert {k: r[k] for k in ("norm", "warmup", "lr")} == best
        assert r["curve"][0][0] == 0 and r["curve"][-1][0] == plan.tf_steps
    recipes = data["summary"]["exp1"]["recipes"]
    assert len(recipes) == 2 * len(plan.tf_warmups)
    assert all(r["lr_sensitivity"] >= 0 for r in recipes)
    assert "## 2. Clipping" in (tmp_path / "stability.md").read_text()
    # --replot recomputes the same summary from the JSON alone
    (tmp_path / "stability.md").unlink()
    assert st.main(["--replot", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "stability.json").read_text())
    assert again["summary"] == data["summary"]
    assert (tmp_path / "stability.md").exists()
    # an interrupted run leaves stability_partial.jsonl (meta, then one run per line)
    lines = [json.dumps(data["meta"])] + [json.dumps(r) for r in runs[: n1 + n2]]
    (tmp_path / st.PARTIAL).write_text("\n".join(lines) + "\n")
    (tmp_path / "stability.json").unlink()
    assert st.main(["--replot", "--out", str(tmp_path)]) == 0
    salvaged = json.loads((tmp_path / "stability.json").read_text())
    assert salvaged["meta"]["partial"] is True and "exp3" not in salvaged["summary"]
    assert salvaged["summary"]["exp2"] == data["summary"]["exp2"]


def test_training_loop_sets_the_schedule_value_before_each_update() -> None:
    torch = pytest.importorskip("torch")
    from steadystep.experiments import stability as st

    w = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([w], lr=1.0)
    schedule = st.tf_schedule("linear", 1e-2, st.QUICK, "wsd")
    scheduler = st._scheduler(opt, schedule)
    seen = []
    for _ in range(st.QUICK.tf_steps):
        seen.append(opt.param_groups[0]["lr"])
        w.grad = torch.ones(())
        opt.step()
        scheduler.step()
    np.testing.assert_allclose(seen, schedule(np.arange(st.QUICK.tf_steps)), rtol=1e-12)


# ------------------------------------------------------------------ experiment 4: depth


def test_plots_do_not_import_the_experiments() -> None:
    """One direction only: stability imports stability_plots, never the reverse."""
    import ast

    from steadystep.experiments import stability_plots

    tree = ast.parse(Path(stability_plots.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.split(".")[-1] == "stability"}


def test_depth_plan_is_the_narrow_long_run_at_one_depth() -> None:
    from steadystep.experiments import stability as st

    plan = st.depth_plan(st.FULL, 12)
    assert (plan.tf_layers, plan.tf_width, plan.tf_steps, plan.context) == (
        12, st.FULL.depth_width, st.FULL.depth_steps, st.FULL.depth_context,
    )  # fmt: skip
    assert plan.tf_steps >= 600  # warmup (60 or 100 steps) is a small part of the run
    assert st.tf_schedule("untuned", 1e-2, plan).length == plan.tf_steps


def test_probe_measures_gradient_norm_and_relative_update_per_layer() -> None:
    torch = pytest.importorskip("torch")
    from steadystep.experiments import stability as st
    from steadystep.experiments.models import CharTransformer, ModelConfig

    torch.manual_seed(0)
    model = CharTransformer(ModelConfig(vocab_size=20, context=8, d_model=16, n_layers=3))
    names = [name for name, _ in st.layer_groups(model)]
    assert names == ["embed", "block0", "block1", "block2", "head"]
    x = torch.randint(0, 20, (4, 8))
    model.loss(x, x).backward()
    head = model.head.weight
    grad, before = head.grad.norm().item(), head.detach().clone()
    lr = 1e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=st.BETAS)
    probe = st._Probe(model)
    opt.step()
    grads, ratios = probe.after()
    assert len(grads) == len(ratios) == len(names)
    assert grads[-1] == pytest.approx(grad, rel=1e-6)
    # Adam's first update is lr * g / (|g| + eps): lr per nonzero-gradient element
    n = int((head.grad != 0).sum())
    assert ratios[-1] == pytest.approx(lr * math.sqrt(n) / before.norm().item(), rel=1e-3)
    assert ratios[-1] == pytest.approx(((head - before).norm() / before.norm()).item(), rel=1e-6)


def test_depth_run_is_deterministic() -> None:
    pytest.importorskip("torch")
    import dataclasses

    from steadystep.experiments import stability as st

    task = {"experiment": 4, "depth": 2, "norm": "post", "warmup": "linear", "lr": 1e-2}
    task |= {"seed": 0, "plan": dataclasses.asdict(st.QUICK)}
    first, again = st.run_task(dict(task)), st.run_task(dict(task))
    for row in (first, again):
        del row["seconds"], row["cpu_seconds"]
    assert first == again
    assert first["probe_steps"] == [s for s in st.PROBES if s < st.QUICK.depth_steps]
    assert len(first["grad_norms"][0]) == 2 + 2  # embeddings, 2 blocks, head
    assert first["update_ratios"][0] == [0.0] * 4  # linear warmup: the first LR is 0


def test_quick_depth_run_end_to_end(tmp_path: Path) -> None:
    """``--quick --experiments 4``: every cell, seed, probe and output of the depth study."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from steadystep.experiments import stability as st

    plan = st.QUICK
    assert st.main(["--quick", "--experiments", "4", "--out", str(tmp_path), "--workers", "1"]) == 0
    assert {"stability_exp4.png", "stability_exp4_mechanism.png"} <= {
        p.name for p in tmp_path.iterdir()
    }
    data = json.loads((tmp_path / "stability.json").read_text())
    runs = data["runs"]
    per_depth = 2 * len(plan.depth_warmups) * len(plan.depth_lrs) * len(plan.seeds)
    assert len(runs) == len(plan.depths) * per_depth
    summary = data["summary"]["exp4"]
    assert len(summary["cells"]) == len(runs) // len(plan.seeds)
    assert len(summary["recipes"]) == len(plan.depths) * 2 * len(plan.depth_warmups)
    # the first gradient depends on the seed only: every LR and warmup must agree exactly
    init = summary["init"]
    assert [(r["depth"], r["norm"]) for r in init] == [
        (d, n) for d in plan.depths for n in ("post", "pre")
    ]
    assert all(r["identical"] and r["n_seeds"] == len(plan.seeds) for r in init)
    assert all(len(r["grad_layers"]) == r["depth"] + 2 for r in init)
    for r in runs:
        assert r["steps_run"] == plan.depth_steps and r["update_ratio_max"] > 0
    text = (tmp_path / "stability.md").read_text()
    assert "## 4. Depth: per recipe" in text and "## 1." not in text
    # --resume after an interruption trains only the missing runs and gives the same digits
    half = len(runs) // 2
    lines = [json.dumps(data["meta"])] + [json.dumps(r) for r in runs[:half]]
    (tmp_path / st.PARTIAL).write_text("\n".join(lines) + "\n")
    out = ["--quick", "--experiments", "4", "--out", str(tmp_path), "--workers", "1"]
    assert st.main([*out, "--resume"]) == 0
    resumed = json.loads((tmp_path / "stability.json").read_text())
    assert resumed["meta"]["resumed_runs"] == half
    assert resumed["summary"] == data["summary"]
    # runs of another plan are refused, not mixed in
    meta = {**data["meta"], "plan": {**data["meta"]["plan"], "depth_steps": 7}}
    (tmp_path / st.PARTIAL).write_text(json.dumps(meta) + "\n")
    with pytest.raises(ValueError, match="`resume`"):
        st.main([*out, "--resume"])
