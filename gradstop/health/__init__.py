"""Gradient health: where a gradient goes wrong (:func:`diagnose`), whether it is right (:func:`check_gradients`,
against float64 finite differences), whether it is biased (:func:`bias_test`, against a zeroth-order estimate) and whether float32 is still enough at a horizon (:func:`precision`).

Each is also ``gs.<name>``; the backends' halves live in ``gradstop.jax`` and ``gradstop.torch``.
"""

from gradstop.health.bias import BiasTest, bias_test
from gradstop.health.check import GradientCheck, check_gradients
from gradstop.health.diagnose import Diagnosis, NonFinite, diagnose
from gradstop.health.precision import Precision, precision

__all__ = ["diagnose", "Diagnosis", "NonFinite", "bias_test", "BiasTest", "check_gradients", "GradientCheck", "precision", "Precision"]
