"""The study: sweeps of training runs (:mod:`gradstop.study.sweep`), the figures built from them
(:mod:`gradstop.study.figures`, driving the scripts in ``experiments/``), results folders written completely or not at
all (:mod:`gradstop.study.results`).

Import the module you need; this package imports none of them, so ``import gradstop`` stays light.
"""
