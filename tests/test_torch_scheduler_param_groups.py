"""layerwise_lr_decay_groups: BERT/ViT layer-wise LR decay, driven by a relative Scheduler."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
from steadystep.torch import Scheduler, layerwise_lr_decay_groups  # noqa: E402


def tiny_bert() -> torch.nn.Module:
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    config = transformers.BertConfig(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)  # built from a config: no download


class TinyViT(torch.nn.Module):
    def __init__(self, depth: int = 2) -> None:
        super().__init__()
        self.patch_embed = torch.nn.Linear(12, 4)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, 5, 4))
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.Linear(4, 4)) for _ in range(depth)
        )
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 3)

    def no_weight_decay(self) -> set[str]:  # timm's convention
        return {"cls_token", "pos_embed"}


def by_param(groups: list[dict]) -> dict[int, dict]:
    return {id(p): g for g in groups for p in g["params"]}


def test_bert_layer_ids_lrs_and_weight_decay() -> None:
    model = tiny_bert()
    groups = layerwise_lr_decay_groups(model, 1e-3, decay=0.8, weight_decay=0.01)
    where = by_param(groups)
    named = dict(model.named_parameters())
    assert len(where) == len(named) == sum(len(g["params"]) for g in groups)  # each param once
    head = 4  # 3 blocks: embeddings 0, blocks 1..3, pooler/classifier 4

    def group(name: str) -> dict:
        return where[id(named[name])]

    assert group("bert.embeddings.word_embeddings.weight")["lr"] == pytest.approx(1e-3 * 0.8**4)
    q = group("bert.encoder.layer.1.attention.self.query.weight")
    assert q["lr"] == pytest.approx(1e-3 * 0.8 ** (head - 2)) and q["weight_decay"] == 0.01
    ln = group("bert.encoder.layer.2.output.LayerNorm.weight")
    assert ln["lr"] == pytest.approx(1e-3 * 0.8) and ln["weight_decay"] == 0.0
    assert ln["name"] == "layer_3_no_decay"
    assert group("classifier.weight")["lr"] == 1e-3
    assert group("bert.pooler.dense.bias")["weight_decay"] == 0.0
    assert group("bert.embeddings.LayerNorm.bias")["name"] == "layer_0_no_decay"


def test_vit_names_and_no_weight_decay_list() -> None:
    model = TinyViT(depth=2)
    groups = layerwise_lr_decay_groups(model, 1.0, decay=0.5, weight_decay=0.05)
    where = by_param(groups)
    assert where[id(model.cls_token)]["name"] == "layer_0_no_decay"
    assert where[id(model.pos_embed)]["lr"] == 0.125
    assert where[id(model.patch_embed.weight)]["name"] == "layer_0"
    assert where[id(model.blocks[1][1].weight)]["lr"] == 0.5
    assert where[id(model.norm.weight)]["lr"] == 1.0 == where[id(model.head.weight)]["lr"]
    assert [g["name"] for g in groups] == [
        "layer_0",
        "layer_0_no_decay",
        "layer_1",
        "layer_1_no_decay",
        "layer_2",
        "layer_2_no_decay",
        "layer_3",
        "layer_3_no_decay",
    ]


def test_relative_scheduler_keeps_layer_ratios() -> None:
    model = TinyViT(depth=3)
    model.head.requires_grad_(False)  # frozen parameters are left out
    groups = layerwise_lr_decay_groups(model, 1e-3, decay=0.7, weight_decay=0.05)
    assert all(p is not model.head.weight for g in groups for p in g["params"])
    opt = torch.optim.AdamW(groups)
    initial = [g["lr"] for g in opt.param_groups]
    mult = ss.warmup(ss.cosine(1.0, 0.1, steps=20), steps=5)
    sched = Scheduler(opt, mult, relative=True)
    for k in range(25):
        for g, lr0 in zip(opt.param_groups, initial, strict=True):
            assert g["lr"] == pytest.approx(lr0 * mult(k), rel=1e-12)
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.ones_like(p)
        opt.step()
        sched.step()


def test_custom_layer_of_and_num_layers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    groups = layerwise_lr_decay_groups(
        model, 1.0, decay=0.5, layer_of=lambda name: int(name.split(".")[0]), num_layers=2
    )
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("layer_0", 0.125),
        ("layer_0_no_decay", 0.125),
        ("layer_1", 0.25),
        ("layer_1_no_decay", 0.25),
        ("layer_2", 0.5),
        ("layer_2_no_decay", 0.5),
    ]


def test_bad_input() -> None:
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module"):
        layerwise_lr_decay_groups([1], 1e-3, 0.9)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"Argument `decay` must be in \(0, 1\]. Received: decay=1.5"
    ):
        layerwise_lr_decay_groups(TinyViT(), 1e-3, 1.5)
    with pytest.raises(ValueError, match="Argument `decay` must be > 0"):
        layerwise_lr_decay_groups(TinyViT(), 1e-3, 0.0)
    with pytest.raises(ValueError, match=r"Argument `base_lr` must be > 0\. Received: base_lr=-1"):
        layerwise_lr_decay_groups(TinyViT(), -1, 0.9)
    with pytest.raises(ValueError, match=r"No transformer blocks found.*layer_of="):
        layerwise_lr_decay_groups(torch.nn.Linear(2, 2), 1e-3, 0.9)
    with pytest.raises(ValueError, match="beyond num_layers=1"):
        layerwise_lr_decay_groups(TinyViT(depth=2), 1e-3, 0.9, num_layers=1)
    with pytest.raises(
        ValueError, match=r"`layer_of\('cls_token'\)` must be an int >= 0 or None\. Received: -1"
    ):
        layerwise_lr_decay_groups(TinyViT(), 1e-3, 0.9, layer_of=lambda n: -1)
