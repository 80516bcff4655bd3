"""A tanh RNN character language model that can start in the exploding-gradient regime.

``recurrent_scale`` sets the recurrent matrix at initialisation to Gaussian entries of standard
deviation ``recurrent_scale / sqrt(hidden)``, whose spectral radius is about
``recurrent_scale`` (circular law). For ``tanh`` (derivative at most 1) a radius above 1 is the
necessary condition for exploding gradients of Pascanu et al. (2013, section 2.1): the
Jacobian product over ``T`` steps can grow like ``radius ** T``. The default ``2.0`` is above
that critical scale; PyTorch's own default (uniform in ``±1/sqrt(hidden)``) has a radius of about
``1/sqrt(3)`` and vanishes instead.

>>> import torch
>>> model = CharRNN(vocab_size=20, hidden=32, recurrent_scale=2.0)
>>> x = torch.zeros(4, 10, dtype=torch.int64)
>>> tuple(model(x).shape)
(4, 10, 20)
>>> radius = torch.linalg.eigvals(model.rnn.weight_hh_l0).abs().max().item()
>>> 1.5 < radius < 2.5
True

References:
    Pascanu, Mikolov, Bengio (2013). On the difficulty of training recurrent neural networks.
    ICML. https://arxiv.org/abs/1211.5063
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CharRNN"]


class CharRNN(nn.Module):
    """Embedding -> one-layer ``tanh`` RNN -> linear head, trained with full BPTT per window.

    Args:
        vocab_size: number of tokens (characters), > 0.
        hidden: recurrent width, > 0.
        embed: embedding width, > 0.
        recurrent_scale: spectral radius (approximately) of the recurrent matrix at
            initialisation, > 0; above 1 is the exploding regime.
    """

    def __init__(
        self, vocab_size: int, hidden: int = 128, embed: int = 32, recurrent_scale: float = 2.0
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("hidden", hidden), ("embed", embed)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"Argument `{name}` must be an int > 0. Received: {name}={value!r}"
                )
        if not (isinstance(recurrent_scale, (int, float)) and recurrent_scale > 0):
            raise ValueError(
                "Argument `recurrent_scale` must be > 0. "
                f"Received: recurrent_scale={recurrent_scale!r}"
            )
        self.embed = nn.Embedding(vocab_size, embed)
        self.rnn = nn.RNN(embed, hidden, nonlinearity="tanh", batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)
        with torch.no_grad():
            self.rnn.weight_hh_l0.normal_(0.0, recurrent_scale / math.sqrt(hidden))
            self.rnn.bias_hh_l0.zero_()
            self.rnn.bias_ih_l0.zero_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, time, vocab_size)``; the hidden state starts at zero per window."""
        out, _ = self.rnn(self.embed(idx))
        return self.head(out)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats)."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
