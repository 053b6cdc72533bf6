"""Each rank builds its model from the config (pretrained weights fetched on the way), then proves
it holds the served weights and that it is one rank of a real process group.

Usage: pretrained_worker.py EXPECTED_WORLD_SIZE SERVED_FILE REPORT_DIR train.py-arguments...
"""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from reporting import check_world, write_report

from superconverge.cli import prepare_inputs


def main() -> None:
    expected, served, report_dir, argv = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
    cfg, task = prepare_inputs(argv)  # every rank, before any process group exists
    model = task.model
    reference = torch.load(served, map_location="cpu", weights_only=True)
    own = model.state_dict()
    body = [key for key in reference if not key.startswith("fc.")]
    accelerator = Accelerator(cpu=True)
    check_world(accelerator, expected)
    report = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "body_equal": all(torch.equal(own[key], reference[key]) for key in body),
        "head_classes": own["fc.weight"].shape[0],
    }
    write_report(report_dir, accelerator, report)
    accelerator.end_training()


if __name__ == "__main__":
    main()
