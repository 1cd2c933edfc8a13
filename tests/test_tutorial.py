"""docs/tutorial.ipynb runs top to bottom (nbclient), so the tutorial never rots."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


@pytest.mark.slow  # about a minute: make test-slow
def test_the_tutorial_notebook_executes_and_its_flows_learn():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}).execute()  # raises on any error
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images == 2  # the trajectory and the training curves, inline
    for flow in ("none", "input", "combined"):
        line = next(l for l in text.splitlines() if l.strip().startswith(f"{flow}: test loss"))
        final, untrained = float(line.split("test loss ")[1].split()[0]), float(line.split("untrained ")[1].split(")")[0])
        assert final < untrained, line
