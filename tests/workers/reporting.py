"""What every distributed test worker does: assert the world size it expects, and write its rank's report."""

from __future__ import annotations

import json
from pathlib import Path


def check_world(accelerator, expected: int) -> None:
    assert accelerator.num_processes == expected, f"world size {accelerator.num_processes}, expected {expected}"


def write_report(report_dir: Path, accelerator, report: dict) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps(report))
