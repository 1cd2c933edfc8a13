"""Pictures of simulator states: animations (GIF, MP4), filmstrips (PNG), and Brax's own HTML viewer.

Framework-neutral: states come in as NumPy arrays, time first, one array per panel; matplotlib draws them.

    from sims import draw

    draw.animate(sim, [states], "swing.gif", titles=["combined"])   # states: (T, state_dim)
    draw.animate(sim, [a, b], "both.gif", titles=["none", "input"])  # two panels side by side, one clock
    draw.filmstrip(sim, [a, b], "both.png", titles=["none", "input"], count=8)  # 8 frames per row

``cartpole`` is drawn as its track, cart and N poles (each pole 2·half_length long, θ = 0 upright; the
poles are hinged side by side on the cart, all coupled to it alone as in the model); ``pointmass`` as
its target (×), its path so far and the mass (its first two coordinates: a plane); ``bounce`` as its
floor and wall, the target, the ball's path and the ball. Brax environments
have Brax's renderer: :func:`html` writes its interactive 3-D viewer. Files are written atomically (a
temporary file beside, then renamed), and an existing file is kept unless ``overwrite=True``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

__all__ = ["DRAWABLE", "check_drawable", "Scene", "scene", "frames", "animate", "filmstrip", "html", "FORMATS"]

DRAWABLE = ("cartpole", "pointmass", "bounce")
FORMATS = {".gif": "animation", ".mp4": "animation", ".png": "filmstrip", ".html": "Brax viewer"}
PANEL_HEIGHT = 2.4  # inches; a panel is as wide as its scene's aspect asks, within PANEL_WIDTHS
PANEL_WIDTHS = (2.4, 6.0)
DPI = 100
CART_WIDTH, CART_HEIGHT = 0.4, 0.2


def check_drawable(sim) -> None:
    """Raise a ValueError saying what to do if ``sim`` cannot be drawn here."""
    if getattr(sim, "pytree_state", False):
        name = sim.describe().get("name", sim.name)
        raise ValueError(f"{name} is drawn by Brax's own renderer (brax.io.html), not here: write an .html "
                         "(sims.draw.html; gradstop play RUN --out FILE.html)")
    if sim.name not in DRAWABLE:
        raise ValueError(f"no drawing for the {sim.name!r} simulator; sims.draw draws {', '.join(DRAWABLE)} "
                         f"(plot its states yourself, or add a scene for it to sims/draw.py)")


# -- scenes: the artists of one panel -----------------------------------------------------------------
class Scene:
    """One panel's drawing of a simulator's states: ``parts`` names its artists (e.g. ``parts["poles"]``, one
    line per pole), ``show(t)`` moves them to the state at time index ``t``."""

    def __init__(self, ax, parts: dict, show):
        self.ax, self.parts, self._show = ax, parts, show

    @property
    def artists(self) -> list:
        return [a for group in self.parts.values() for a in group]

    def show(self, t: int) -> "Scene":
        self._show(t)
        return self


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values)]


def _span(values, pad: float, reach: float) -> tuple[float, float]:
    """(low, high) covering the finite ``values`` with ``pad`` to spare, at most ``reach`` from the origin."""
    v = _finite(values)
    low, high = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    return max(low - pad, -reach), min(high + pad, reach)


def _cartpole_limits(sim, states: list[np.ndarray]) -> dict:
    pole = 2.0 * sim.half_length
    reach = max(12 * pole, 3.0)  # a cart that runs away leaves the picture rather than shrink it to nothing
    x0, x1 = _span(np.concatenate([s[:, 0] for s in states]), pole + CART_WIDTH, reach)
    x0, x1 = min(x0, -1.5 * pole), max(x1, 1.5 * pole)
    return {"x": (x0, x1), "y": (-pole - 0.25, pole + 0.25)}


def _cartpole(ax, sim, states: np.ndarray, limits: dict) -> Scene:
    from matplotlib.patches import Rectangle

    n, pole = sim.poles, 2.0 * sim.half_length
    (x_lo, x_hi), (y_lo, y_hi) = limits["x"], limits["y"]
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    track = ax.plot([x_lo, x_hi], [0.0, 0.0], color="0.55", linewidth=1.0, zorder=1)
    cart = Rectangle((0.0, -CART_HEIGHT / 2), CART_WIDTH, CART_HEIGHT, facecolor="0.3", edgecolor="black", zorder=3)
    ax.add_patch(cart)
    offsets = np.linspace(-0.3, 0.3, n) * CART_WIDTH if n > 1 else np.zeros(1)  # hinges side by side on the cart
    poles = [ax.plot([], [], color=f"C{i % 10}", linewidth=3.0, solid_capstyle="round", zorder=4, label=f"pole {i + 1}")[0]
             for i in range(n)]
    hinges = ax.plot([], [], "o", color="black", markersize=3, zorder=5)

    def show(t):
        x, th = states[t, 0], states[t, 1 : n + 1]
        cart.set_x(x - CART_WIDTH / 2)
        base = x + offsets
        tip_x, tip_y = base + pole * np.sin(th), CART_HEIGHT / 2 + pole * np.cos(th)
        for line, bx, tx, ty in zip(poles, base, tip_x, tip_y):
            line.set_data([bx, tx], [CART_HEIGHT / 2, ty])
        hinges[0].set_data(base, np.full(n, CART_HEIGHT / 2))

    return Scene(ax, {"track": track, "cart": [cart], "poles": poles, "hinges": hinges}, show)


def _plane(sim, states: np.ndarray) -> np.ndarray:
    """A point mass's positions in the plane (T, 2): its first two coordinates (the second 0 in 1-D)."""
    p = states[:, : sim.dims]
    return p[:, :2] if sim.dims >= 2 else np.concatenate([p, np.zeros_like(p)], -1)


def _pointmass_limits(sim, states: list[np.ndarray]) -> dict:
    target = np.asarray(sim.target, dtype=float)[:2]
    points = np.concatenate([_plane(sim, s) for s in states] + [target[None, : 2] if target.size >= 2 else np.zeros((1, 2))])
    reach = 10 * max(sim.init_range, 1.0) + float(np.abs(target).max(initial=0.0))
    pad = 0.15 * max(sim.init_range, 0.5)
    lo0, hi0 = _span(points[:, 0], pad, reach)
    lo1, hi1 = _span(points[:, 1], pad, reach)
    half = max(hi0 - lo0, hi1 - lo1) / 2  # square, so the plane is not stretched
    c0, c1 = (lo0 + hi0) / 2, (lo1 + hi1) / 2
    return {"x": (c0 - half, c0 + half), "y": (c1 - half, c1 + half)}


def _pointmass(ax, sim, states: np.ndarray, limits: dict) -> Scene:
    ax.set_xlim(*limits["x"])
    ax.set_ylim(*limits["y"])
    plane = _plane(sim, states)
    target = (list(sim.target[:2]) + [0.0])[:2]
    goal = ax.plot([target[0]], [target[1]], "x", color="tab:red", markersize=9, markeredgewidth=2, zorder=2, label="target")
    path = ax.plot([], [], color="C0", alpha=0.4, linewidth=1.2, zorder=3)
    mass = ax.plot([], [], "o", color="C0", markersize=9, markeredgecolor="black", zorder=4, label="mass")
    if sim.dims > 2:
        ax.text(0.98, 0.02, f"coordinates 1, 2 of {sim.dims}", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color="0.4")

    def show(t):
        path[0].set_data(plane[: t + 1, 0], plane[: t + 1, 1])
        mass[0].set_data(plane[t : t + 1, 0], plane[t : t + 1, 1])

    return Scene(ax, {"target": goal, "path": path, "mass": mass}, show)


def _bounce_limits(sim, states: list[np.ndarray]) -> dict:
    points = np.concatenate([s[:, :2] for s in states] + [np.asarray(sim.target, dtype=float)[None]])
    lo0, hi0 = min(points[:, 0].min(), 0.0) - 0.2, max(points[:, 0].max(), sim.wall_x) + 0.2
    lo1, hi1 = -0.1, max(points[:, 1].max(), 0.5) + 0.2
    half = max(hi0 - lo0, hi1 - lo1) / 2  # square, so the plane is not stretched
    c0 = (lo0 + hi0) / 2
    return {"x": (c0 - half, c0 + half), "y": (lo1, lo1 + 2 * half)}


def _bounce(ax, sim, states: np.ndarray, limits: dict) -> Scene:
    """The ball's plane: the floor (y = 0) and the wall (x = wall_x) as thick lines, the target, the path."""
    ax.set_xlim(*limits["x"])
    ax.set_ylim(*limits["y"])
    floor = ax.plot(list(limits["x"]), [0.0, 0.0], color="0.3", linewidth=3, zorder=1)
    wall = ax.plot([sim.wall_x, sim.wall_x], list(limits["y"]), color="0.3", linewidth=3, zorder=1)
    goal = ax.plot([sim.target[0]], [sim.target[1]], "x", color="tab:red", markersize=9, markeredgewidth=2, zorder=2)
    path = ax.plot([], [], color="C0", alpha=0.4, linewidth=1.2, zorder=3)
    ball = ax.plot([], [], "o", color="C0", markersize=9, markeredgecolor="black", zorder=4)

    def show(t):
        path[0].set_data(states[: t + 1, 0], states[: t + 1, 1])
        ball[0].set_data(states[t : t + 1, 0], states[t : t + 1, 1])

    return Scene(ax, {"floor": floor, "wall": wall, "target": goal, "path": path, "ball": ball}, show)


SCENES = {"cartpole": (_cartpole, _cartpole_limits), "pointmass": (_pointmass, _pointmass_limits),
          "bounce": (_bounce, _bounce_limits)}


def _panels(states) -> list[np.ndarray]:
    """``states`` as a list of (T, state_dim) float arrays of one length T."""
    panels = [states] if isinstance(states, np.ndarray) and states.ndim == 2 else list(states)
    panels = [np.asarray(s, dtype=float) for s in panels]
    if not panels or any(s.ndim != 2 for s in panels):
        raise ValueError("states: give one (T, state_dim) array per panel (time first), e.g. out.states[:, 0] of a rollout")
    if len({s.shape for s in panels}) > 1:
        raise ValueError(f"states: every panel needs the same (T, state_dim), got {[s.shape for s in panels]}")
    return panels


def limits(sim, states) -> dict:
    """Axis limits ({"x": (lo, hi), "y": (lo, hi)}) that hold every panel's states, shared so panels compare."""
    check_drawable(sim)
    return SCENES[sim.name][1](sim, _panels(states))


def scene(ax, sim, states, limits_: dict | None = None) -> Scene:
    """Draw ``sim``'s states (T, state_dim) on ``ax``, at t = 0; ``scene(...).show(t)`` moves to another time."""
    check_drawable(sim)
    states = _panels(states)[0]
    if states.shape[1] != sim.state_dim:
        raise ValueError(f"states have {states.shape[1]} values per state, {sim.name} has state_dim {sim.state_dim}")
    draw, bounds = SCENES[sim.name]
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return draw(ax, sim, states, limits_ or bounds(sim, [states])).show(0)


# -- animations and filmstrips ------------------------------------------------------------------------
def _figure(rows: int, cols: int, shared: dict, extra: float = 0.0):
    """A figure of rows × cols panels sized to the scene's aspect; ``extra`` inches below for a caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (x0, x1), (y0, y1) = shared["x"], shared["y"]
    height = PANEL_HEIGHT - 0.5  # less the title
    width = min(max(height * (x1 - x0) / (y1 - y0), PANEL_WIDTHS[0]), PANEL_WIDTHS[1])
    fig, axes = plt.subplots(rows, cols, figsize=((width + 0.3) * cols, PANEL_HEIGHT * rows + extra), dpi=DPI, squeeze=False)
    return plt, fig, axes


def _captions(sim, n: int, captions) -> list[str]:
    if captions is None:
        return [f"t = {t * sim.dt:.2f} s" for t in range(n)]
    captions = list(captions)
    if len(captions) != n:
        raise ValueError(f"captions: give one per frame ({n}), got {len(captions)}")
    return captions


def frames(sim, states, titles=None, captions=None) -> np.ndarray:
    """The animation's frames as RGB images (T, height, width, 3) uint8: one panel per states array, side by
    side, under their ``titles``, with one caption per frame below (default: the time, t·dt)."""
    check_drawable(sim)
    panels = _panels(states)
    titles = _titles(titles, len(panels))
    n = panels[0].shape[0]
    text = _captions(sim, n, captions)
    shared = limits(sim, panels)
    plt, fig, axes = _figure(1, len(panels), shared, extra=0.3)
    try:
        scenes = [scene(ax, sim, s, shared) for ax, s in zip(axes[0], panels)]
        for ax, title in zip(axes[0], titles):
            ax.set_title(title, fontsize=10)
        caption = fig.text(0.5, 0.02, "", ha="center", va="bottom", fontsize=9)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        images = []
        for t in range(n):
            for s in scenes:
                s.show(t)
            caption.set_text(text[t])
            fig.canvas.draw()
            images.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        return np.stack(images)
    finally:
        plt.close(fig)


def _titles(titles, n: int) -> list[str]:
    titles = [""] * n if titles is None else [str(t) for t in titles]
    if len(titles) != n:
        raise ValueError(f"titles: give one per panel ({n}), got {len(titles)}")
    return titles


def animate(sim, states, path, titles=None, captions=None, *, fps: float = 50.0, overwrite: bool = False) -> Path:
    """Write the animation of ``states`` (one (T, state_dim) array per panel) to ``path``: ``.gif`` (imageio) or
    ``.mp4`` (imageio with ffmpeg: ``pip install 'imageio[ffmpeg]'``); returns the path."""
    path = Path(path)
    suffix = _suffix(path, (".gif", ".mp4"))
    _refuse_existing(path, overwrite)
    if not fps > 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if suffix == ".mp4":
        _need_ffmpeg()
    images = frames(sim, states, titles, captions)
    import imageio.v3 as iio

    if suffix == ".gif":
        data = iio.imwrite("<bytes>", images, extension=".gif", duration=1000.0 / fps, loop=0)
        _write(path, data, overwrite)
    else:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.mp4")
        try:
            iio.imwrite(tmp, images, extension=".mp4", fps=fps, macro_block_size=1)
            _replace(tmp, path, overwrite)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def filmstrip(sim, states, path, titles=None, *, count: int = 8, overwrite: bool = False) -> Path:
    """Write a PNG of ``count`` frames in a row, evenly spaced from the first state to the last; one row per
    states array, each labelled with its title; returns the path."""
    check_drawable(sim)
    path = Path(path)
    _suffix(path, (".png",))
    _refuse_existing(path, overwrite)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count (frames in a filmstrip) must be an integer ≥ 1, got {count!r}")
    rows = _panels(states)
    titles = _titles(titles, len(rows))
    n = rows[0].shape[0]
    times = np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))
    shared = limits(sim, rows)
    plt, fig, axes = _figure(len(rows), len(times), shared)
    try:
        for r, (states_r, title) in enumerate(zip(rows, titles)):
            for c, t in enumerate(times):
                ax = axes[r, c]
                scene(ax, sim, states_r, shared).show(int(t))
                if r == 0:
                    ax.set_title(f"t = {t * sim.dt:.2f} s", fontsize=9)
            if title:
                axes[r, 0].set_ylabel(title, fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    _write(path, buf.getvalue(), overwrite)
    return path


def html(sim, states, path, *, episode: int = 0, overwrite: bool = False) -> Path:
    """Write Brax's interactive viewer (``brax.io.html.render``) of one episode of a Brax simulator's rollout
    states (the pytree a rollout returns, time first, then batch) to ``path`` (``.html``); returns the path.
    The page loads Brax's viewer script from its CDN when opened."""
    path = Path(path)
    _suffix(path, (".html",))
    _refuse_existing(path, overwrite)
    if not getattr(sim, "pytree_state", False) or not hasattr(sim, "_env"):
        raise ValueError(f"an .html is Brax's viewer, for brax:<env> simulators; draw {sim.name} as a .gif, .mp4 or .png")
    import jax
    from brax.io import html as brax_html

    pipeline = states.pipeline_state
    steps = jax.tree.leaves(pipeline)[0].shape[0]
    trajectory = [jax.tree.map(lambda v, t=t: v[t, episode], pipeline) for t in range(steps)]
    _write(path, brax_html.render(sim._env.sys, trajectory, colab=False).encode(), overwrite)
    return path


# -- files --------------------------------------------------------------------------------------------
def _suffix(path: Path, allowed) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"cannot write {path.name!r} here: give a file ending in {' or '.join(allowed)}")
    return suffix


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists: choose another file, or replace it (overwrite=True; "
                              "gradstop play: --force)")
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: its folder {path.parent} does not exist; create it first")


def _need_ffmpeg() -> None:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise ImportError("writing an .mp4 needs ffmpeg for imageio: pip install 'imageio[ffmpeg]', or write a .gif") from None


def _write(path: Path, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, flushed, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def _replace(tmp: Path, path: Path, overwrite: bool) -> None:
    if not overwrite and path.exists():  # appeared while drawing
        raise FileExistsError(f"{path} appeared while it was drawn; it was kept: choose another file")
    os.replace(tmp, path)
