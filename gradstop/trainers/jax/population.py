"""A population of JAX runs (one per seed; BPTT or SHAC) as one vmapped, jitted program per epoch.

Each member's whole state (its program's ``carry``) is stacked on a leading axis and the program's
pure epoch function (``epoch_fn``) is mapped over it with ``jax.vmap``; each member reads its own
data (``Data`` of its seed). With more than one device the population axis is
sharded over them (``jax.sharding``), so S members spread over the devices.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from gradstop.trainers.data import Data
from gradstop.trainers.jax.bptt import as_states
from gradstop.trainers.run import NonFiniteError, make_sim, program_for, summarise

__all__ = ["train_population", "population_sharding"]


def population_sharding(size: int):
    """A sharding that splits a leading population axis of ``size`` over the devices (None for one device)."""
    devices = jax.devices()
    n = max(d for d in range(1, len(devices) + 1) if size % d == 0)
    if n == 1:
        return None
    mesh = jax.make_mesh((n,), ("population",), devices=devices[:n])
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("population"))


def train_population(configs, *, progress: bool = False) -> list:
    sim = make_sim(configs[0])
    members = [program_for(c, sim) for c in configs]
    data = [Data.from_config(sim, c) for c in configs]
    head, config = members[0], configs[0]
    sharding = population_sharding(len(members))
    place = (lambda tree: jax.device_put(tree, sharding)) if sharding is not None else (lambda tree: tree)

    def stack(trees):
        return place(jax.tree.map(lambda *xs: jnp.stack(xs), *trees))

    carry = stack([m.carry for m in members])
    epoch = jax.jit(jax.vmap(head.epoch_fn()))
    evaluate = jax.jit(jax.vmap(head.evaluate_fn()))
    test = stack([as_states(d.test, head.dtype) for d in data])
    validation = stack([as_states(d.validation, head.dtype) for d in data]) if config.validation else None
    steps = data[0].updates
    updates, evals = [[] for _ in members], [[] for _ in members]
    clock, skipped = 0.0, np.zeros(len(members), int)

    def record_eval(epoch_done):
        loss, success, reward = (np.asarray(v) for v in evaluate(head.actor_of(carry), test))
        val = [np.asarray(v) for v in evaluate(head.actor_of(carry), validation)] if validation is not None else None
        for i in range(len(members)):
            evals[i].append(dict(epoch=epoch_done, update=epoch_done * steps, test_loss=float(loss[i]),
                                 test_success=float(success[i]), test_reward=float(reward[i]), seconds=clock,
                                 **({} if val is None else dict(val_loss=float(val[0][i]), val_success=float(val[1][i])))))

    def inputs(e):  # every member's epoch inputs, stacked on the population axis
        return stack([m.inputs(d, e) for m, d in zip(members, data)])

    tick = time.perf_counter()
    compiled = epoch.lower(carry, inputs(0)).compile()
    compile_seconds = time.perf_counter() - tick
    record_eval(0)
    for e in range(config.epochs):
        batch = inputs(e)
        tick = time.perf_counter()
        carry, metrics = compiled(carry, batch)
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        took = time.perf_counter() - tick
        clock += took
        rate = len(members) * steps * head.env_steps_per_update / took
        if config.on_nonfinite == "stop" and not metrics["finite"].all():
            i, j = map(int, np.argwhere(~metrics["finite"])[0])
            raise NonFiniteError(f"non-finite loss or gradient at update {e * steps + j + 1} (epoch {e + 1}), flow "
                                 f"{config.flow}, population member seed {configs[i].seed}; pass on_nonfinite='skip' to "
                                 "skip such updates and count them", update=e * steps + j + 1, epoch=e + 1, flow=config.flow)
        guards = getattr(head, "check_guards", None)  # SHAC's divergence checks (guards=True), member by member
        if guards is not None:
            for i, c in enumerate(configs):
                guards(c, {k: v[i] for k, v in metrics.items()}, e, member=f", population member seed {c.seed}")
        for i in range(len(members)):
            for j in range(steps):
                updates[i].append(dict(epoch=e + 1, update=e * steps + j + 1, seconds=clock, steps_per_second=rate,
                                       **{k: metrics[k][i, j] for k in metrics}))
            skipped[i] += int((~metrics["finite"][i]).sum())
        if (e + 1) % config.eval_every == 0 or e + 1 == config.epochs:
            record_eval(e + 1)
    results = []
    for i, (m, c) in enumerate(zip(members, configs)):
        m.carry = jax.tree.map(lambda v: jnp.asarray(np.asarray(v)[i]), carry)
        results.append(summarise(c, m, updates[i], evals[i], None, int(skipped[i]), compile_seconds))
    return results
