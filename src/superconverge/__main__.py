"""``python -m superconverge [train|lr-find] --config task.yaml key=value ...`` (``accelerate launch -m superconverge`` on every rank)."""

import sys

from superconverge.cli import entry

sys.exit(entry())
