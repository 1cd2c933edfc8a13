"""``gradstop play`` and ``sims.draw``: trained runs back as animations and filmstrips, and their bad input."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

from gradstop.cli import main
from gradstop.trainers.load import initial_states, load_run, run_folders, trajectories
from sims import draw, make

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A finished 2-pole cartpole results folder with two flows (torch: no compile, a few seconds)."""
    out = tmp_path_factory.mktemp("play") / "cartpole"
    assert main(["train", "--sim", "cartpole", "--param", "poles=2", "--backend", "torch", "--flow", "none,input",
                 "--horizon", "10", "--epochs", "1", "--updates-per-epoch", "2", "--batch", "4", "--test-size", "4",
                 "--hidden", "8", "--out", str(out), "--quiet"]) == 0
    return out


def frames_of(path):
    return iio.imread(path, index=None)


def test_a_results_folder_plays_every_flow_side_by_side_as_a_gif(results, tmp_path, capsys):
    both, one = tmp_path / "both.gif", tmp_path / "one.gif"
    assert main(["play", str(results), "--out", str(both)]) == 0
    assert main(["play", str(results / "none"), "--out", str(one)]) == 0
    assert f"wrote {both}" in capsys.readouterr().out
    a, b = frames_of(both), frames_of(one)
    assert a.shape[0] == b.shape[0] == 11  # x_0 … x_H of the run's horizon, one frame each
    assert a.shape[2] > 1.8 * b.shape[2]  # two panels against one
    assert not (a[0] == a[-1]).all(), "the animation does not move"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both.gif", "one.gif"], "a temporary file was left behind"


def test_episodes_play_one_after_another_for_the_given_steps(results, tmp_path):
    path = tmp_path / "e.gif"
    assert main(["play", str(results / "input"), "--out", str(path), "--episodes", "3", "--steps", "4", "--fps", "10"]) == 0
    assert frames_of(path).shape[0] == 3 * (4 + 1)


def test_a_filmstrip_has_the_frames_in_a_row_and_a_row_per_flow(results, tmp_path):
    one, both = tmp_path / "one.png", tmp_path / "both.png"
    assert main(["play", str(results / "none"), "--out", str(one), "--frames", "4"]) == 0
    assert main(["play", str(results), "--out", str(both), "--frames", "4"]) == 0
    assert one.read_bytes()[:8] == PNG
    a, b = iio.imread(one), iio.imread(both)
    assert a.ndim == 3 and a.shape[1] > 3 * a.shape[0]  # four frames side by side
    assert b.shape[0] > 1.8 * a.shape[0] and b.shape[1] == a.shape[1]


def test_the_default_output_is_play_gif_in_the_run_folder(results, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(results / "none", run)
    assert main(["play", str(run)]) == 0
    assert frames_of(run / "play.gif").shape[0] == 11


def test_load_run_rebuilds_the_trained_policy_and_rolls_it_out(results):
    config, sim, policy = load_run(results / "input")
    assert config.flow == "input" and sim.poles == 2
    saved = np.load(results / "input" / "policy.npz")
    import gradstop as gs

    for mine, theirs in zip(gs.get_weights(policy), [saved[f"arr_{i}"] for i in range(len(saved.files))]):
        np.testing.assert_array_equal(mine, theirs)
    x0 = initial_states(sim, seed=3, episodes=2)
    states = trajectories(policy, sim, steps=6, x0=x0)
    assert states.shape == (7, 2, sim.state_dim)
    np.testing.assert_allclose(states[0], x0, rtol=1e-6)
    assert run_folders(results) == ([results / "none", results / "input"], [])


def test_a_two_pole_cartpole_is_drawn_with_two_poles_that_move():
    sim = make("cartpole", backend="numpy", poles=2)
    t = np.linspace(0.0, 1.0, 5)[:, None]
    states = np.concatenate([t, np.pi * (1 - t), np.pi * (1 - t) + 0.3, t * 0, t * 0, t * 0], axis=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    scene = draw.scene(ax, sim, states)
    assert len(scene.parts["poles"]) == 2 and len(scene.parts["cart"]) == 1
    up = scene.show(4).parts["poles"][0].get_ydata()
    assert up[1] > up[0]  # at θ = 0 the first pole points up
    plt.close(fig)
    images = draw.frames(sim, [states])
    assert images.shape[0] == 5 and images.dtype == np.uint8
    assert not (images[0] == images[-1]).all()
    three = draw.frames(make("cartpole", backend="numpy", poles=3), [np.zeros((2, 8))])
    one = draw.frames(make("cartpole", backend="numpy", poles=1), [np.zeros((2, 4))])
    assert (three[0] != one[0]).any(), "three poles look like one"


def test_a_point_mass_is_drawn_with_its_target_and_path(tmp_path):
    sim = make("pointmass", backend="numpy", dims=2, target=(0.5, -0.5))
    states = np.zeros((6, 4))
    states[:, 0] = np.linspace(-1.0, 0.5, 6)
    path = draw.filmstrip(sim, [states], tmp_path / "pm.png", ["pointmass"], count=3)
    assert iio.imread(path).shape[1] > 2 * iio.imread(path).shape[0]
    assert draw.frames(sim, [states], captions=[f"step {i}" for i in range(6)]).shape[0] == 6


def test_the_bounce_task_is_drawn_with_its_floor_wall_target_and_a_ball_that_moves(tmp_path):
    import matplotlib.pyplot as plt

    sim = make("bounce", backend="numpy")
    states = np.zeros((5, 4))
    states[:, 0], states[:, 1] = np.linspace(0.0, 0.45, 5), np.linspace(1.0, 0.05, 5)
    fig = plt.figure()
    sc = draw.scene(fig.add_subplot(), sim, states)
    assert list(sc.parts["wall"][0].get_xdata()) == [sim.wall_x, sim.wall_x]
    assert list(sc.parts["floor"][0].get_ydata()) == [0.0, 0.0]
    sc.show(4)
    assert tuple(sc.parts["ball"][0].get_xydata()[0]) == (0.45, 0.05)
    plt.close(fig)
    path = draw.filmstrip(sim, [states], tmp_path / "b.png", ["bounce"], count=3)
    assert iio.imread(path).shape[1] > 2 * iio.imread(path).shape[0]


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    assert main(["play", str(tmp_path), "--out", str(tmp_path / "x.gif")]) == 2
    assert "is not a gradstop train run (no config.json) nor a folder holding runs" in capsys.readouterr().err
    assert main(["play", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_unfinished_run_is_refused_and_skipped_beside_finished_ones(results, tmp_path, capsys):
    copy = tmp_path / "r"
    shutil.copytree(results, copy)
    (copy / "input" / "policy.npz").unlink()
    assert main(["play", str(copy / "input"), "--out", str(tmp_path / "a.gif")]) == 2
    assert "holds no finished run yet" in capsys.readouterr().err
    assert main(["play", str(copy), "--out", str(tmp_path / "b.gif")]) == 0
    assert "skipping" in capsys.readouterr().err and frames_of(tmp_path / "b.gif").shape[0] == 11


def test_an_unknown_extension_is_refused(results, tmp_path, capsys):
    assert main(["play", str(results), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "unknown format '.jpg'; give FILE.gif or FILE.mp4" in capsys.readouterr().err
    assert main(["play", str(results), "--out", str(tmp_path / "x.html")]) == 2
    assert "an .html is Brax's viewer" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_existing_output_is_kept_unless_forced(results, tmp_path, capsys):
    path = tmp_path / "mine.gif"
    path.write_bytes(b"keep me")
    assert main(["play", str(results), "--out", str(path)]) == 2
    assert "already exists: pass --force" in capsys.readouterr().err
    assert path.read_bytes() == b"keep me"
    assert main(["play", str(results), "--out", str(path), "--force", "--steps", "2"]) == 0
    assert frames_of(path).shape[0] == 3
    with pytest.raises(FileExistsError, match="already exists"):
        draw.animate(make("pointmass", backend="numpy"), [np.zeros((2, 6))], path)


def test_bad_counts_are_refused(results, tmp_path, capsys):
    for flag in ("--episodes", "--steps", "--frames"):
        assert main(["play", str(results), "--out", str(tmp_path / "x.gif"), flag, "0"]) == 2
        assert f"{flag} must be ≥ 1" in capsys.readouterr().err


def test_mp4_needs_ffmpeg_or_says_how_to_get_it(results, tmp_path, capsys):
    path = tmp_path / "x.mp4"
    code = main(["play", str(results), "--out", str(path), "--steps", "3"])
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        assert code == 2 and "pip install 'imageio[ffmpeg]'" in capsys.readouterr().err and not path.exists()
    else:
        assert code == 0 and frames_of(path).shape[0] >= 3


def test_runs_of_different_simulators_are_not_put_side_by_side(results, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(results / "none", mixed / "a")
    shutil.copytree(results / "none", mixed / "b")
    config = json.loads((mixed / "b" / "config.json").read_text())
    config["sim_params"] = {**config["sim_params"], "dt": 0.02}  # the same shapes, another system
    (mixed / "b" / "config.json").write_text(json.dumps(config))
    assert main(["play", str(mixed), "--out", str(tmp_path / "m.gif")]) == 2
    assert "simulate different systems" in capsys.readouterr().err
    config["sim_params"] = {"poles": 3}  # weights of a 2-pole policy do not fit
    (mixed / "b" / "config.json").write_text(json.dumps(config))
    assert main(["play", str(mixed / "b"), "--out", str(tmp_path / "m.gif")]) == 2
    assert "policy.npz does not fit the policy of" in capsys.readouterr().err
    assert not (tmp_path / "m.gif").exists()


def test_a_simulator_without_a_drawing_says_what_to_do():
    class Pytree:
        pytree_state, name = True, "brax"

        def describe(self):
            return {"name": "brax:hopper"}

    with pytest.raises(ValueError, match=r"brax:hopper is drawn by Brax's own renderer \(brax.io.html\)"):
        draw.check_drawable(Pytree())
    with pytest.raises(ValueError, match="no drawing for the 'neural' simulator; sims.draw draws cartpole, pointmass, bounce"):
        draw.check_drawable(make("neural", backend="numpy"))


@pytest.mark.slow
def test_a_brax_rollout_is_written_as_brax_html(tmp_path):
    pytest.importorskip("brax")
    import gradstop as gs

    sim = make("brax:inverted_pendulum")
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(8,))
    states = trajectories(policy, sim, steps=5, episodes=2)
    path = draw.html(sim, states, tmp_path / "p.html", episode=1)
    assert "brax" in path.read_text().lower() and path.stat().st_size > 1000
