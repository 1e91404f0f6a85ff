"""rigbench: plan, serve, benchmark and evaluate open-weight coding models on your own rig."""

__version__ = "0.1.0"
