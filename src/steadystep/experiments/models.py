"""A small character-level transformer language model (GPT-style, causal), for the experiments.

``norm`` picks where LayerNorm sits in each block:

- ``"pre"`` (GPT-2 and later): ``x = x + attn(LN(x)); x = x + mlp(LN(x))`` and a final LN.
- ``"post"`` (the original Transformer, BERT): ``x = LN(x + attn(x)); x = LN(x + mlp(x))``.

Post-LN is the form that needs learning-rate warmup to train at all at a high learning rate:
its gradients near the output layer are large at initialisation (Xiong et al., 2020,
"On Layer Normalization in the Transformer Architecture", https://arxiv.org/abs/2002.04745).

>>> import torch
>>> config = ModelConfig(vocab_size=50, context=16, d_model=32, n_layers=2, n_heads=4)
>>> model = CharTransformer(config)
>>> x = torch.zeros(3, 16, dtype=torch.int64)
>>> tuple(model(x).shape)
(3, 16, 50)
>>> loss = model.loss(x, x)  # mean next-token cross-entropy, ~ln(50) at initialisation
>>> 3.0 < loss.item() < 5.0
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CharTransformer", "ModelConfig"]

Norm = Literal["pre", "post"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of a :class:`CharTransformer`.

    Args:
        vocab_size: number of tokens (characters).
        context: longest input sequence (learned positional embeddings).
        d_model: width; divisible by ``n_heads``.
        n_layers: number of transformer blocks.
        n_heads: attention heads per block.
        d_ff: hidden width of each MLP; ``None`` means ``4 * d_model``.
        dropout: dropout probability (0 for the deterministic experiments).
        norm: ``"pre"`` or ``"post"`` layer normalisation (see the module docstring).
    """

    vocab_size: int
    context: int = 64
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int | None = None
    dropout: float = 0.0
    norm: Norm = "pre"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "d_model", "n_layers", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"Argument `{name}` must be an int > 0. Received: {name}={value!r}"
                )
        if self.d_ff is not None and (not isinstance(self.d_ff, int) or self.d_ff <= 0):
            raise ValueError(
                f"Argument `d_ff` must be an int > 0 or None. Received: d_ff={self.d_ff!r}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(
                "Argument `d_model` must be divisible by `n_heads`. "
                f"Received: d_model={self.d_model}, n_heads={self.n_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"Argument `dropout` must be in [0, 1). Received: dropout={self.dropout!r}"
            )
        if self.norm not in ("pre", "post"):
            raise ValueError(
                f"Argument `norm` must be 'pre' or 'post'. Received: norm={self.norm!r}"
            )

    @property
    def hidden(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model


class _Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.pre = config.norm == "pre"
        self.dropout = config.dropout
        self.ln1 = nn.LayerNorm(config.d_model)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.fc = nn.Linear(config.d_model, config.hidden)
        self.out = nn.Linear(config.hidden, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, c // self.n_heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=True,
        )
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(F.gelu(self.fc(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            x = x + self._attn(self.ln1(x))
            return x + self._mlp(self.ln2(x))
        x = self.ln1(x + self._attn(x))
        return self.ln2(x + self._mlp(x))


class CharTransformer(nn.Module):
    """A causal character transformer LM: token + learned position embeddings, blocks, a head.

    Initialisation follows GPT-2 (normal, std 0.02; residual output projections scaled by
    ``1/sqrt(2 * n_layers)``), so a given ``torch.manual_seed`` gives the same model everywhere.

    Args:
        config: the model's shape, a :class:`ModelConfig`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.context, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model) if config.norm == "pre" else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init)
        for block in self.blocks:
            for layer in (block.proj, block.out):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, time, vocab_size)`` for int64 token ids ``(batch, time)``."""
        t = idx.shape[1]
        if t > self.config.context:
            raise ValueError(
                f"Input has {t} tokens, more than the model's context={self.config.context}"
            )
        x = self.drop(self.tok(idx) + self.pos(torch.arange(t, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of ``targets`` given ``idx``."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
