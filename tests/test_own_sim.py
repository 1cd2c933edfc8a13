"""A user's own simulator is first-class: sims.register, "module:Class", the trainers, the commands, sweeps, docs."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # "tests.helpers:Pendulum" names the module by its package, as a user names theirs
    sys.path.insert(0, str(ROOT))

import gradstop as gs  # noqa: E402
import sims  # noqa: E402
from gradstop.cli import main  # noqa: E402
from gradstop.trainers import TrainConfig, train  # noqa: E402
from sims.base import Sim  # noqa: E402
from tests.helpers import Pendulum  # noqa: E402

SPEC = "tests.helpers:Pendulum"
TINY = dict(horizon=10, epochs=2, updates_per_epoch=2, batch=4, test_size=4, hidden=(8,))
TINY_FLAGS = ["--horizon", "10", "--epochs", "2", "--updates-per-epoch", "2", "--batch", "4", "--test-size", "4", "--hidden", "8",
              "--quiet"]


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry: what a test registers is gone afterwards."""
    monkeypatch.setattr(sims, "_REGISTRY", dict(sims._REGISTRY))
    return sims._REGISTRY


# -- sims.register and sims.make --------------------------------------------------------------------
def test_a_registered_class_is_made_by_name_with_its_parameters_checked(registry):
    assert sims.register("pendulum", Pendulum) is Pendulum
    assert "pendulum" in sims.names() and set(sims.BUILTINS) <= set(sims.names())
    sim = sims.make("pendulum", backend="torch", length=0.5)
    assert isinstance(sim, Pendulum) and sim.backend == "torch" and sim.length == 0.5
    assert sims.origin(sim) == {"name": "pendulum", "backend": "torch", "preset": None, "params": {"length": 0.5}}
    with pytest.raises(ValueError, match=r"pendulum has no parameter 'mass'; its parameters: dt, effort, gravity, length, max_torque"):
        sims.make("pendulum", mass=2.0)
    with pytest.raises(ValueError, match=r"pendulum has no preset 'fast'; available: none"):
        sims.make("pendulum", preset="fast")
    with pytest.raises(ValueError, match="pendulum: dt must be a positive number"):
        sims.make("pendulum", dt=-1.0)  # the class's own checks still run


def test_register_works_as_a_decorator_and_takes_plain_factories(registry):
    @sims.register("pendulum-fn")
    def build(backend, length=1.0):
        return Pendulum(backend=backend, length=length)

    assert sims.make("pendulum-fn", backend="numpy", length=2.0).length == 2.0
    with pytest.raises(ValueError, match=r"cannot be called with backend= and 'mass'.*its parameters: length"):
        sims.make("pendulum-fn", mass=1.0)


@pytest.mark.parametrize("backend", ["jax", "torch", "numpy"])
def test_module_colon_class_is_imported_and_simulates_in_every_backend(backend):
    sim = sims.make(SPEC, backend=backend, length=0.5)
    assert type(sim) is Pendulum and sim.length == 0.5
    x = sim.reset(0, 5)
    low, high = sim.init_bounds()
    assert np.all(np.asarray(x) >= low) and np.all(np.asarray(x) <= high)
    x1 = sim.step(x, x[:, :1] * 0.0)
    assert tuple(x1.shape) == (5, 2) and tuple(sim.obs(x).shape) == (5, 3) and tuple(sim.cost(x1, x[:, :1]).shape) == (5,)
    assert np.asarray(sim.success(x)).tolist() == [0.0] * 5  # hanging


def test_the_same_physics_in_jax_and_torch():
    x = np.array([[3.0, 0.2], [0.1, -1.0]])
    a = np.array([[0.5], [-2.0]])
    out = {}
    for backend in ("jax", "torch", "numpy"):
        sim = sims.make(SPEC, backend=backend)
        if backend == "jax":
            import jax.numpy as jnp

            xs, as_ = jnp.asarray(x), jnp.asarray(a)
        elif backend == "torch":
            import torch

            xs, as_ = torch.as_tensor(x), torch.as_tensor(a)
        else:
            xs, as_ = x, a
        out[backend] = np.asarray(sim.step(xs, as_))
    np.testing.assert_allclose(out["jax"], out["numpy"], rtol=1e-12)
    np.testing.assert_allclose(out["torch"], out["numpy"], rtol=1e-12)


@pytest.mark.parametrize("spec, match", [
    ("tests.nowhere:Pendulum", r"no module named 'tests.nowhere'; the module must be importable from the current directory .* or PYTHONPATH"),
    ("nowhere_at_all:Sim", r"no module named 'nowhere_at_all'"),
    ("tests.helpers:Pendulu", r"module 'tests.helpers' \(.*helpers.py\) has no attribute 'Pendulu'; its simulator classes: Faulty, Pendulum"),
    ("tests.helpers:", r"not of the form 'package.module:Class'"),
    ("tests.helpers:RTOL", r"RTOL is a dict, not a Sim subclass or a callable"),
    ("pendulum", r"unknown simulator 'pendulum'; available: bounce, cartpole, diffrl_cartpole, neural, pointmass.*'package.module:Class' or a name given to sims.register"),
])
def test_a_simulator_that_cannot_be_found_is_named_with_where_it_was_looked_for(spec, match):
    with pytest.raises(ValueError, match=match):
        sims.make(spec)


def test_a_module_in_the_current_directory_imports_from_the_command_line_and_in_sweep_workers(tmp_path, monkeypatch):
    (tmp_path / "my_own_sims_mod.py").write_text("from tests.helpers import Pendulum as Swing\n")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_own_sims_mod", raising=False)
    with pytest.raises(ValueError, match="no module named 'my_own_sims_mod'"):
        sims.make("my_own_sims_mod:Swing")
    monkeypatch.chdir(tmp_path)  # the console script's sys.path lacks the current directory; make() adds it
    assert type(sims.make("my_own_sims_mod:Swing")) is Pendulum
    assert sys.path[0] == str(tmp_path.resolve())


def test_register_refuses_bad_names_and_factories_naming_the_fix(registry):
    with pytest.raises(ValueError, match="'cartpole' is a built-in simulator; register yours under another name"):
        sims.register("cartpole", Pendulum)
    sims.register("swing", Pendulum)
    sims.register("swing", Pendulum)  # the same factory again: fine

    @dataclasses.dataclass(frozen=True, eq=False)
    class Other(Pendulum):
        pass

    with pytest.raises(ValueError, match=r"the name 'swing' is taken by tests.helpers.Pendulum; choose another name, or pass replace=True"):
        sims.register("swing", Other)
    sims.register("swing", Other, replace=True)
    assert type(sims.make("swing")) is Other
    with pytest.raises(TypeError, match="the name must be a string, got type"):
        sims.register(Pendulum, Pendulum)
    with pytest.raises(ValueError, match="without ':'"):
        sims.register("my:pendulum", Pendulum)
    with pytest.raises(TypeError, match=r"register the class \(sims.register\('p', Pendulum\)\), not an instance of it"):
        sims.register("p", Pendulum())
    with pytest.raises(TypeError, match="must be a Sim subclass or a callable taking backend="):
        sims.register("p", 3)
    with pytest.raises(ValueError, match=r"register it \(sims.register\('myname', Pendulum\)\) or name it by where it lives"):
        sims.make(Pendulum)


def test_a_missing_protocol_method_is_named(registry, tmp_path):
    class NoCost:  # a plain class, not a Sim
        name, state_dim, obs_dim, action_dim, dt = "nocost", 2, 2, 1, 0.1

        def __init__(self, backend):
            self.backend = backend

        def step(self, x, a):
            return x

        def obs(self, x):
            return x

        def terminal_cost(self, x):
            return x[..., 0] * 0

        def init_bounds(self):
            return np.zeros(2), np.ones(2)

    sims.register("nocost", NoCost)
    with pytest.raises(TypeError, match="NoCost does not follow the simulator protocol: it has no method 'cost'"):
        train(TrainConfig(sim="nocost", **TINY))
    with pytest.raises(TypeError, match="it has no method 'cost'"):
        gs.check_gradients(sims.make("nocost", backend="torch"))

    @dataclasses.dataclass(frozen=True, eq=False)
    class Half(Sim):  # a Sim that forgot its cost
        name = "half"
        state_dim = action_dim = 1

        def step(self, x, a):
            return x + a

        def init_bounds(self):
            return np.zeros(1), np.ones(1)

    sims.register("half", Half)
    with pytest.raises(NotImplementedError, match=r"Half does not implement cost\(x_next, a\): define it in the class"):
        train(TrainConfig(sim="half", backend="torch", **TINY))


# -- the trainers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_train_runs_resumes_and_skips_a_module_class_simulator(backend, tmp_path):
    config = TrainConfig(sim=SPEC, backend=backend, flow="input", **TINY)
    result = train(config, tmp_path / "run")
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "updates.csv", "eval.csv", "policy.npz", "summary.json", f"checkpoint.{'npz' if backend == 'jax' else 'pt'}"} <= files
    assert result.summary["sim"] == SPEC and len(result.updates) == 4 and np.isfinite(result.summary["final_loss"])
    assert result.summary["final_test_success"] is not None  # the pendulum's success measure is evaluated
    assert TrainConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text())).sim == SPEC
    before = (tmp_path / "run" / "updates.csv").read_bytes()
    again = train(config, tmp_path / "run")  # complete: read back, not retrained
    assert again.summary == result.summary and (tmp_path / "run" / "updates.csv").read_bytes() == before


def test_a_sim_object_with_a_results_folder_is_taken_when_the_config_rebuilds_it(tmp_path, registry):
    config = TrainConfig(sim=SPEC, backend="torch", sim_params={"length": 0.5}, **{**TINY, "epochs": 1})
    train(config, tmp_path / "a", sim=sims.make(SPEC, backend="torch", length=0.5))
    train(config, tmp_path / "b", sim=Pendulum(backend="torch", length=0.5))  # not from make, but the same describe()
    with pytest.raises(ValueError, match=r"sim= is Pendulum\(.*length=2.0.*\), but the config builds Pendulum\(.*length=0.5"):
        train(config, tmp_path / "c", sim=Pendulum(backend="torch", length=2.0))
    with pytest.raises(ValueError, match=r"sim= is a Pendulum, but the config's sim 'cartpole' builds a CartPole.*"
                                         r"'tests.helpers:Pendulum'"):
        train(TrainConfig(backend="torch", **TINY), tmp_path / "d", sim=Pendulum(backend="torch"))
    with pytest.raises(ValueError, match=r"the config's sim 'swing' does not build: unknown simulator 'swing'.*sims.register"):
        train(TrainConfig(sim="swing", backend="torch", **TINY), tmp_path / "e", sim=Pendulum(backend="torch"))
    assert not any((tmp_path / n).exists() for n in "cde")
    sims.register("swing", Pendulum)
    train(TrainConfig(sim="swing", backend="torch", **{**TINY, "epochs": 1}), tmp_path / "f", sim=sims.make("swing", backend="torch"))


def test_bptt_trains_a_user_simulator_object():
    import torch

    sim = Pendulum(backend="torch")
    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(8,), seed=0)
    before = [p.detach().clone() for p in policy.parameters()]
    policy, history = gs.bptt(policy, sim, stop="input", horizon=10, iters=2, batch=4)
    assert history.loss.shape == (2,) and np.all(np.isfinite(history.loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_a_sweep_trains_a_module_class_simulator_and_ray_refuses_a_name_registered_here(tmp_path, registry):
    from gradstop.study.sweep import grid, run_sweep

    runs = grid({"sim": SPEC, "backend": "torch", **TINY}, {"flow": ["none", "input"]})
    report = run_sweep(runs, tmp_path / "sweep", progress=False)
    assert report.counts()["done"] == 2 and all(o.summary["sim"] == SPEC for o in report.outcomes)
    sims.register("swing", Pendulum)
    registered = grid({"sim": "swing", "backend": "torch", **TINY}, {"flow": ["none"]})
    with pytest.raises(ValueError, match=r"'swing' was registered in this process .* Ray workers do not see it: .*"
                                         r"sim='tests.helpers:Pendulum'"):
        run_sweep(registered, tmp_path / "ray", ray="local", progress=False)
    assert not (tmp_path / "ray").exists()


def test_a_sweep_worker_puts_the_drivers_directory_on_its_path(tmp_path, monkeypatch):
    from gradstop.study.sweep import execute

    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "worker_own_sims_mod.py").write_text("from tests.helpers import Pendulum\n")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "sweep.json").write_text("{}")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "worker_own_sims_mod", raising=False)
    config = TrainConfig(sim="worker_own_sims_mod:Pendulum", backend="torch", **{**TINY, "epochs": 1}).to_dict()
    assert execute("r", config, str(tmp_path / "root"))["status"] == "failed"  # not importable from here
    result = execute("r", config, str(tmp_path / "root"), str(folder))
    assert result["status"] == "done", result.get("error")


# -- the commands -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_gradstop_train_with_a_module_class_simulator_trains_and_the_same_command_skips(backend, tmp_path, capsys):
    argv = ["train", "--sim", SPEC, "--backend", backend, "--out", str(tmp_path / "out"), *TINY_FLAGS]
    assert main(argv) == 0
    run = tmp_path / "out" / "none"
    assert (run / "summary.json").exists() and (tmp_path / "out" / "summary.csv").exists()
    before = (run / "updates.csv").read_bytes()
    assert main(argv) == 0  # complete: skipped, nothing rewritten
    assert (run / "updates.csv").read_bytes() == before
    assert main([*argv, "--param", "mass=2"]) == 2
    assert "has no parameter 'mass'; its parameters: dt, effort, gravity, length, max_torque" in capsys.readouterr().err


def test_gradstop_train_names_a_missing_module(tmp_path, capsys):
    assert main(["train", "--sim", "tests.nowhere:Pendulum", "--out", str(tmp_path / "out"), *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "no module named 'tests.nowhere'" in err and "current directory" in err
    assert not (tmp_path / "out").exists()


def test_gradstop_check_passes_a_module_class_simulator(tmp_path, capsys):
    out = tmp_path / "check"
    assert main(["check", "--sim", SPEC, "--backend", "torch", "--out", str(out)]) == 0
    assert "gradient check of pendulum: passed" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is True and summary["sim_describe"]["name"] == "pendulum"


def test_gradstop_diagnose_traces_a_module_class_simulator(tmp_path):
    out = tmp_path / "diagnose"
    assert main(["diagnose", "--sim", SPEC, "--backend", "torch", "--flows", "none,input", "--horizon", "6", "--batch", "2",
                 "--no-precision", "--out", str(out)]) == 0
    assert (out / "diagnose.png").exists() and (out / "trace.csv").exists()


def test_the_sim_help_lists_the_built_ins_and_the_module_class_form(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "cartpole, neural, pointmass" in text and "package.module:Class" in text


# -- the docs ---------------------------------------------------------------------------------------
def test_the_docs_example_is_the_tests_pendulum_and_trains(registry):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "simulators.md").read_text(), re.S)
    example, training = blocks[0], blocks[1]
    body = example[example.index("    gravity"):example.index("\n\nsims.register")]
    helpers = (ROOT / "tests" / "helpers.py").read_text()
    assert body in helpers  # the page shows the class the tests run
    ns = {"__name__": "docs_simulators"}
    run = lambda code: exec(compile(code, "docs/simulators.md", "exec", dont_inherit=True), ns)  # noqa: E731
    run(example)
    assert sims.make("pendulum", backend="numpy").describe() == Pendulum(backend="numpy").describe()
    run(training.replace("epochs=10", "epochs=1").replace("updates_per_epoch=16", "updates_per_epoch=2"))
    assert np.isfinite(ns["result"].summary["final_test_loss"])
