"""The experiments steadystep ships: the ``steadystep demo`` training run and the benchmarks.

Modules (each imports PyTorch when used, never ``import steadystep`` itself):

- :mod:`steadystep.experiments.data`: the ``pydoc_data.topics`` character corpus (ships with
  Python, no download), its vocabulary, train/validation split and a seeded batch sampler.
- :mod:`steadystep.experiments.models`: a small character-level transformer language model with
  a ``norm="pre"|"post"`` switch.
- :mod:`steadystep.experiments.demo`: two training runs at an aggressive learning rate, one
  plain and one with steadystep's recipe (warmup + decay + global-norm clipping), and a report.
"""
