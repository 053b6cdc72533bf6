"""Runs the product's own training path, then reports what this rank saw (for distributed tests).

Usage: report_worker.py EXPECTED_WORLD_SIZE REPORT_DIR train.py-arguments...
"""

import sys
from pathlib import Path

import torch
from accelerate.utils import is_compiled_module
from reporting import check_world, write_report

from superconverge.cli import start_run
from superconverge.signals import StopSignals
from superconverge.startup import build_trainer


def main() -> None:
    expected, report_dir, argv = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    with StopSignals() as stop:
        report(expected, report_dir, build_trainer(*start_run(argv, stop), stop))


def report(expected: int, report_dir: Path, trainer) -> None:
    accelerator = trainer.accelerator
    # Proves this is one distributed job, not N independent single-process runs.
    check_world(accelerator, expected)
    assert torch.distributed.is_initialized() == (expected > 1)
    summary = trainer.fit()
    flat = torch.cat([p.detach().float().flatten() for p in accelerator.unwrap_model(trainer.model).parameters()])
    everyone = accelerator.gather(flat.unsqueeze(0))
    images = trainer.step.eval_inputs(next(iter(trainer.val_loader))[0])
    # The plain module (Accelerate's autocast is patched into its forward): a hook would make a compiled model recompile.
    plain = accelerator.unwrap_model(trainer.model, keep_torch_compile=False).eval()
    # Accelerate casts the outputs back to fp32; the dtype inside the network shows autocast at work.
    seen = []
    first_conv = next(m for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    hook = first_conv.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        plain(images)
    hook.remove()
    conv_output = seen[0]
    report = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "params_identical_across_ranks": bool(all(torch.equal(everyone[0], row) for row in everyone)),
        "param_sum": float(flat.double().sum()),
        "max_lr": trainer.state.max_lr,
        "mixed_precision": accelerator.mixed_precision,
        "conv_output_dtype": str(conv_output.dtype),
        # The output: a 1-channel input is trivially contiguous in both layouts.
        "conv_output_channels_last": conv_output.is_contiguous(memory_format=torch.channels_last),
        "compiled": is_compiled_module(trainer.model),
        "optimizer_steps": summary.optimizer_steps,
    }
    write_report(report_dir, accelerator, report)
    trainer.close()


if __name__ == "__main__":
    main()
