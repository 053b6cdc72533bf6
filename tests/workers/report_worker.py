"""Runs the product's own training path, then reports what this rank saw (for distributed tests).

Usage: report_worker.py EXPECTED_WORLD_SIZE REPORT_DIR train.py-arguments...
"""

import json
import sys
from pathlib import Path

import torch

from superconverge.cli import build_trainer


def main() -> None:
    expected, report_dir, argv = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    trainer = build_trainer(argv)
    accelerator = trainer.accelerator
    # Proves this is one distributed job, not N independent single-process runs.
    assert accelerator.num_processes == expected, f"world size {accelerator.num_processes}, expected {expected}"
    assert torch.distributed.is_initialized() == (expected > 1)
    summary = trainer.fit()
    flat = torch.cat([p.detach().float().flatten() for p in accelerator.unwrap_model(trainer.model).parameters()])
    everyone = accelerator.gather(flat.unsqueeze(0))
    images = trainer._normalize(next(iter(trainer.val_loader))[0])
    trainer.model.eval()
    # Accelerate casts the outputs back to fp32; the dtype inside the network shows autocast at work.
    seen = []
    first_conv = next(m for m in accelerator.unwrap_model(trainer.model).modules() if isinstance(m, torch.nn.Conv2d))
    hook = first_conv.register_forward_hook(lambda module, inputs, output: seen.append(str(output.dtype)))
    with torch.no_grad():
        trainer.model(images)
    hook.remove()
    report = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "params_identical_across_ranks": bool(all(torch.equal(everyone[0], row) for row in everyone)),
        "param_sum": float(flat.double().sum()),
        "max_lr": trainer.state.max_lr,
        "mixed_precision": accelerator.mixed_precision,
        "conv_output_dtype": seen[0],
        "optimizer_steps": summary["optimizer_steps"],
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps(report))
    accelerator.end_training()


if __name__ == "__main__":
    main()
