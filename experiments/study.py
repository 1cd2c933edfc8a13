"""The study's simulators, shared by the figure scripts: a label -> (sims.make name, parameters).

The cartpoles use ``preset="literature"`` (the published multi-pole model: T = 1 s in 100 steps, loss
1 − mean cos θ at the final step); the others their defaults.
"""

SIMS = {
    "pointmass": ("pointmass", {}),
    "cartpole-1": ("cartpole", dict(preset="literature", poles=1)),
    "cartpole-2": ("cartpole", dict(preset="literature", poles=2)),
    "cartpole-3": ("cartpole", dict(preset="literature", poles=3)),
    "cartpole-4": ("cartpole", dict(preset="literature", poles=4)),
    "neural": ("neural", {}),
}
