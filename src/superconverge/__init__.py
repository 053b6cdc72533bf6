"""superconverge: one-cycle training with an LR range test, on anything from a laptop to a SLURM cluster."""

from superconverge.orphan import die_with_launcher

__version__ = "0.1.0"

die_with_launcher()  # first thing in a rank, before torch's import takes seconds in which its launcher may die
