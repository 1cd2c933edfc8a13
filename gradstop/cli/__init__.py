"""The ``gradstop`` command line (``gradstop --help``). The library never imports this package."""

from gradstop.cli.main import main
from gradstop.cli.train import parse_sim_params

__all__ = ["main", "parse_sim_params"]
