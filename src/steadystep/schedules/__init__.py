"""Pure schedules: immutable values ``step -> number``, composable, printable, parseable."""

from . import presets as presets
from ._base import Schedule as Schedule
from ._clocks import FromEpochs as FromEpochs
from ._clocks import FromSamples as FromSamples
from ._clocks import FromTokens as FromTokens
from ._clocks import from_epochs as from_epochs
from ._clocks import from_samples as from_samples
from ._clocks import from_tokens as from_tokens
from ._combine import Clamp as Clamp
from ._combine import Minimum as Minimum
from ._combine import Product as Product
from ._combine import Repeat as Repeat
from ._combine import Scale as Scale
from ._combine import Sequence as Sequence
from ._combine import clamp as clamp
from ._combine import minimum as minimum
from ._combine import product as product
from ._combine import repeat as repeat
from ._combine import sequence as sequence
from ._fractions import RunFraction as RunFraction
from ._fractions import Unresolved as Unresolved
from ._fractions import fraction as fraction
from ._plateau import Plateau as Plateau
from ._plateau import PlateauState as PlateauState
from ._plateau import apply_reduction as apply_reduction
from ._plateau import find_plateau as find_plateau
from ._plateau import plateau as plateau
from ._primitives import Constant as Constant
from ._primitives import Cosine as Cosine
from ._primitives import Exponential as Exponential
from ._primitives import InverseSqrt as InverseSqrt
from ._primitives import Linear as Linear
from ._primitives import Multistep as Multistep
from ._primitives import OneMinusSqrt as OneMinusSqrt
from ._primitives import Piecewise as Piecewise
from ._primitives import Polynomial as Polynomial
from ._primitives import Power as Power
from ._primitives import Step as Step
from ._primitives import constant as constant
from ._primitives import cosine as cosine
from ._primitives import exponential as exponential
from ._primitives import inverse_sqrt as inverse_sqrt
from ._primitives import linear as linear
from ._primitives import multistep as multistep
from ._primitives import one_minus_sqrt as one_minus_sqrt
from ._primitives import piecewise as piecewise
from ._primitives import polynomial as polynomial
from ._primitives import power as power
from ._primitives import step as step
from ._retime import Retime as Retime
from ._retime import retime as retime
from ._shapes import (
    CosineRestarts,
    CosineWave,
    Cycles,
    Cyclic,
    ExponentialRamp,
    LogRamp,
    RAdamWarmup,
    Shift,
    cosine_restarts,
    cosine_wave,
    cycles,
    cyclic,
    exponential_ramp,
    log_ramp,
    radam_warmup,
    shift,
)
from ._spec import SpecError as SpecError
from ._spec import parse as parse
from ._warmup import Warmup as Warmup
from ._warmup import untuned_warmup as untuned_warmup
from ._warmup import warmup as warmup

__all__ = [
    "Clamp",
    "Constant",
    "Cosine",
    "CosineRestarts",
    "CosineWave",
    "Cycles",
    "Cyclic",
    "Exponential",
    "ExponentialRamp",
    "FromEpochs",
    "FromSamples",
    "FromTokens",
    "InverseSqrt",
    "Linear",
    "LogRamp",
    "Minimum",
    "Multistep",
    "OneMinusSqrt",
    "Piecewise",
    "Plateau",
    "PlateauState",
    "Polynomial",
    "Power",
    "Product",
    "RAdamWarmup",
    "Repeat",
    "Retime",
    "RunFraction",
    "Scale",
    "Schedule",
    "Sequence",
    "Shift",
    "SpecError",
    "Step",
    "Unresolved",
    "Warmup",
    "apply_reduction",
    "clamp",
    "constant",
    "cosine",
    "cosine_restarts",
    "cosine_wave",
    "cycles",
    "cyclic",
    "exponential",
    "exponential_ramp",
    "find_plateau",
    "fraction",
    "from_epochs",
    "from_samples",
    "from_tokens",
    "inverse_sqrt",
    "linear",
    "log_ramp",
    "minimum",
    "multistep",
    "one_minus_sqrt",
    "parse",
    "piecewise",
    "plateau",
    "polynomial",
    "power",
    "presets",
    "product",
    "radam_warmup",
    "repeat",
    "retime",
    "sequence",
    "shift",
    "step",
    "untuned_warmup",
    "warmup",
]
