"""``gradstop play RUN_DIR``: watch trained policies act, as an animation (GIF, MP4) or a filmstrip (PNG).

    gradstop play results/train-cartpole-jax-1a2b3c4d --out swing.gif     # one panel per flow, side by side
    gradstop play results/train-cartpole-jax-1a2b3c4d/combined --out strip.png --frames 10
    gradstop play results/train-brax-jax-…/none --out hopper.html         # Brax: its own 3-D viewer

RUN_DIR is a ``gradstop train`` run folder (one flow) or its results folder (every finished flow,
side by side, from the same initial states). The policies are loaded and rolled out by
``gradstop.trainers.load``, drawn by ``sims.draw``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0

EPILOG = """\
outputs (by --out's extension):
  .gif, .mp4   an animation: each episode in turn, every step one frame (.mp4 needs
               pip install 'imageio[ffmpeg]')
  .png         a filmstrip: --frames frames in a row, one row per flow and episode
  .html        Brax runs: Brax's interactive 3-D viewer (brax.io.html; opens online)

examples:
  # every flow of a results folder side by side, from the same initial state
  gradstop play results/train-cartpole-jax-1a2b3c4d --out cartpole.gif

  # one flow, three episodes, 200 steps each (beyond the training horizon)
  gradstop play results/train-cartpole-jax-1a2b3c4d/combined --episodes 3 --steps 200 \\
      --out long.gif

  # a filmstrip of 10 frames per flow, for a paper or a README
  gradstop play results/train-cartpole-jax-1a2b3c4d --out strip.png --frames 10"""


def add_parsers(sub) -> None:
    """Add the ``play`` subcommand to the ``gradstop`` parser."""
    p = sub.add_parser("play", help="draw trained policies acting: an animation (.gif, .mp4) or a filmstrip (.png)",
                       description="Roll the trained policies of a gradstop train run (or of every flow of its\n"
                       "results folder) out from the same initial states, without gradients, and draw them.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_DIR", help="a gradstop train run folder (holding config.json and policy.npz), "
                   "or a results folder holding one such folder per flow")
    p.add_argument("--out", metavar="FILE", help="the file to write: .gif, .mp4, .png (filmstrip) or, for a Brax run, "
                   ".html (default: RUN_DIR/play.gif; Brax: RUN_DIR/play.html)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the initial states (sim.reset) (default: 0)")
    p.add_argument("--episodes", type=int, default=1, metavar="K", help="episodes, each from its own initial state (default: 1)")
    p.add_argument("--steps", type=int, metavar="H", help="steps per episode (default: the run's horizon)")
    p.add_argument("--fps", type=float, metavar="F", help="animation frames per second (default: real time, 1/dt, "
                   "at most 50: slow motion for faster simulators)")
    p.add_argument("--frames", type=int, default=8, metavar="K", help=".png: frames per row (default: 8)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def play(ns: argparse.Namespace) -> int:
    """Run ``gradstop play``; returns the exit code."""
    from sims import draw

    from gradstop.trainers.load import initial_states, load_run, read_config, run_folders, trajectories

    for name, value in (("--episodes", ns.episodes), ("--frames", ns.frames)) + ((("--steps", ns.steps),) if ns.steps is not None else ()):
        if value < 1:
            raise ValueError(f"{name} must be ≥ 1, got {value}")
    if ns.seed < 0:
        raise ValueError(f"--seed must be ≥ 0, got {ns.seed}")
    folders, unfinished = run_folders(ns.run)
    if not folders:
        raise ValueError(f"{ns.run} holds no finished run yet ({', '.join(str(f) for f in unfinished)} "
                         "lack policy.npz): run its gradstop train command again to finish them")
    for f in unfinished:
        print(f"gradstop play: skipping {f}: the run is unfinished (no policy.npz)", file=sys.stderr)
    configs = [read_config(f) for f in folders]
    brax = configs[0].sim.startswith("brax:")
    out = Path(ns.out) if ns.out else Path(ns.run) / ("play.html" if brax else "play.gif")
    kind = out.suffix.lower()
    if kind not in draw.FORMATS:
        raise ValueError(f"--out {out}: unknown format {out.suffix or '(no extension)'!r}; give FILE.gif or FILE.mp4 "
                         "(an animation), FILE.png (a filmstrip), or FILE.html (Brax runs)")
    if brax != (kind == ".html"):
        raise ValueError(f"{configs[0].sim} is drawn by Brax's own viewer: give --out FILE.html" if brax else
                         f"--out {out}: an .html is Brax's viewer, for brax:<env> runs; draw {configs[0].sim} as a "
                         ".gif, .mp4 or .png")
    if brax and len(folders) > 1:
        raise ValueError(f"Brax's viewer shows one run: give one flow's folder, one of {', '.join(str(f) for f in folders)}")
    if out.exists() and not ns.force:
        raise FileExistsError(f"{out} already exists: pass --force to replace it, or choose another --out")
    if any(c.backend == "jax" and c.dtype == "float64" for c in configs):
        import jax

        jax.config.update("jax_enable_x64", True)

    runs = [load_run(f) for f in folders]
    sim = runs[0][1]
    described = {str(f): s.describe() for f, (_, s, _) in zip(folders, runs)}
    if len({repr(d) for d in described.values()}) > 1:
        raise ValueError(f"the runs in {ns.run} simulate different systems ({'; '.join(f'{k}: {v}' for k, v in described.items())}): "
                         "play them one run folder at a time")
    if not brax:
        draw.check_drawable(sim)
    steps = ns.steps or configs[0].horizon
    x0 = initial_states(sim, ns.seed, ns.episodes)  # the same initial states for every panel
    states = [trajectories(policy, s, steps=steps, x0=x0) for _, s, policy in runs]
    titles = _titles(configs, folders)

    if brax:
        for k in range(ns.episodes):
            path = out if ns.episodes == 1 else out.with_name(f"{out.stem}-{k + 1}{out.suffix}")
            draw.html(sim, states[0], path, episode=k, overwrite=ns.force)
            print(f"wrote {path}")
        return EXIT_OK
    if kind == ".png":
        rows = [s[:, k] for k in range(ns.episodes) for s in states]
        labels = [t if ns.episodes == 1 else f"{t}, episode {k + 1}" for k in range(ns.episodes) for t in titles]
        draw.filmstrip(sim, rows, out, labels, count=ns.frames, overwrite=ns.force)
    else:
        panels = [s.transpose(1, 0, 2).reshape(-1, s.shape[-1]) for s in states]  # episodes one after another
        captions = [(f"episode {k + 1}/{ns.episodes}   " if ns.episodes > 1 else "") + f"t = {t * sim.dt:.2f} s"
                    for k in range(ns.episodes) for t in range(steps + 1)]
        fps = ns.fps if ns.fps is not None else min(50.0, max(1.0, round(1.0 / sim.dt)))
        draw.animate(sim, panels, out, titles, captions, fps=fps, overwrite=ns.force)
    print(f"wrote {out}")
    return EXIT_OK


def _titles(configs, folders) -> list[str]:
    """The panels' titles: the flows' names, or the folders' where the flows repeat (e.g. a sweep's runs)."""
    flows = [c.flow for c in configs]
    return flows if len(set(flows)) == len(flows) else [f.name for f in folders]


__all__ = ["add_parsers", "play"]
