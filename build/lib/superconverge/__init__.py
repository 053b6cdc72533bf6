"""superconverge: one-cycle training with an LR range test, on anything from a laptop to a SLURM cluster."""

__version__ = "0.1.0"
