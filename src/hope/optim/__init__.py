"""Optimizers of Nested Learning: M3 (Algorithm 1), Muon, DGD (Eq. 57), delta and deep momentum (Eq. 48–50).

Self-contained: imports nothing from the rest of `hope`, so it can be used (and tested) on its own.
"""

from hope.optim.base import MatrixOptimizer, split_params
from hope.optim.dgd import DGD
from hope.optim.factory import OPTIMIZER_DEFAULTS, OPTIMIZERS, adamw, build_optimizer
from hope.optim.m3 import M3
from hope.optim.momentum import DeepMomentum, DeltaMomentum
from hope.optim.muon import Muon
from hope.optim.newton_schulz import NS_COEFFICIENTS, newton_schulz, orthogonalize

__all__ = [
    "DGD",
    "M3",
    "NS_COEFFICIENTS",
    "OPTIMIZERS",
    "OPTIMIZER_DEFAULTS",
    "DeepMomentum",
    "DeltaMomentum",
    "MatrixOptimizer",
    "Muon",
    "adamw",
    "build_optimizer",
    "newton_schulz",
    "orthogonalize",
    "split_params",
]
