"""Trainers: BPTT (both frameworks) on the rollout contract, with checkpoints and exact resume.

    from gradstop.trainers import TrainConfig, train

    cfg = TrainConfig(sim="cartpole", sim_params={"poles": 2}, flow="combined", data="fixed", epochs=50)
    result = train(cfg, out="results/my-run")          # resumable: run it again after a crash
    result.summary["final_test_loss"]

Layout: ``config`` (the typed run config), ``data`` (initial-state sets, keyed by seed and
epoch), ``schedule`` (learning-rate formulas), ``files`` (atomic writes, append-only metrics),
``run`` (the loop: epochs, evaluation, checkpoints, resume), ``population`` (S seeds at once), and one folder per framework
holding only what must differ (``jax/bptt.py``, ``torch/bptt.py``, ``*/optim.py``).
"""

from gradstop.trainers.config import TrainConfig
from gradstop.trainers.population import train_population
from gradstop.trainers.run import EVAL_COLUMNS, UPDATE_COLUMNS, NonFiniteError, RunResult, train

__all__ = ["TrainConfig", "train", "train_population", "RunResult", "NonFiniteError", "UPDATE_COLUMNS", "EVAL_COLUMNS"]
