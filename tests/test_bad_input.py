"""Bad input fails fast on every rank with a message that names the key or file, and no hang."""

import time

import pytest
from conftest import DIGITS, run


def expect_failure(args, *needles, nproc=2, env=None):
    started = time.monotonic()
    proc = run(args, nproc=nproc, check=False, timeout=120, env=env)
    assert proc.returncode != 0
    assert time.monotonic() - started < 100, "must fail fast, not wait for a collective timeout"
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]
    if nproc == 2:  # both ranks report the error themselves, and the launcher's summary ends with it
        assert "[rank 1] superconverge: error:" in proc.stderr, proc.stderr[-3000:]
        root_cause = proc.stderr.split("Root Cause")[-1]
        # The first rank to fail may be the other one, stopped by the launcher (-15) after writing its message.
        assert "traceback : superconverge: error:" in root_cause, proc.stderr[-3000:]
        assert needles[0] in root_cause, root_cause
    # accelerate launch prints its own traceback for a failed child; ours must not appear.
    assert "superconverge/" not in proc.stderr and 'train.py", line' not in proc.stderr, proc.stderr[-3000:]
    return proc


# One two-process case per place bad input is found (the command line, the config's keys and types, the data,
# the model, its weights); the messages of every other config value are checked in-process (test_config.py).
CASES = {
    "bad_override": (["trainer.epochs"], ["key.sub=value"]),
    "unknown_key": (["trainer.epohcs=3"], ["trainer.epohcs: unknown key"]),
    "wrong_type": (["trainer.grad_accum_steps=many"], ["trainer.grad_accum_steps"]),
    "unknown_dataset": (["data.name=imagenet22k"], ["data.name"]),
    "missing_cifar": (["data.name=cifar10", "data.root=/nonexistent/data"], ["cifar10", "not found"]),
    "missing_imagefolder": (["data.name=imagefolder", "data.root=/nonexistent/photos"], ["/nonexistent/photos"]),
    "unknown_model": (["model.name=resnet9000"], ["model.name", "resnet9000"]),
    "missing_weights": (["model.weights_file=/nonexistent/w.pt"], ["model.weights_file", "/nonexistent/w.pt"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_two_processes(tmp_path, case):
    overrides, needles = CASES[case]
    expect_failure(DIGITS + [f"output_dir={tmp_path}/run", *overrides], *needles)


def test_a_rank_that_starts_late_still_says_so_before_the_launcher_stops_it(tmp_path):
    """The first rank to fail waits for the others to report: here rank 1's interpreter starts 4 s late
    (a slow import under load), before it could catch the launcher's SIGTERM."""
    (tmp_path / "sitecustomize.py").write_text("import os\nimport time\n\nif os.environ.get('RANK') == '1':\n    time.sleep(4)\n")
    args = DIGITS + [f"output_dir={tmp_path}/run", "data.name=imagenet22k"]
    expect_failure(args, "data.name", env={"PYTHONPATH": str(tmp_path)})


def test_unknown_key_in_file_names_the_file(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("data:\n  name: digits\n  batch_sise: 32\n")
    expect_failure(["--config", str(config), f"output_dir={tmp_path}/run"], "data.batch_sise: unknown key", str(config), nproc=1)


def test_empty_class_folder(tmp_path):
    from PIL import Image

    for name in ("cobra", "viper"):
        (tmp_path / "photos" / name).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "cobra" / "a.png")
    expect_failure(DIGITS + ["data.name=imagefolder", f"data.root={tmp_path}/photos", f"output_dir={tmp_path}/run"], "viper", "no images")


def test_a_truncated_image_is_named_before_any_work(tmp_path):
    from PIL import Image

    for name in ("cobra", "viper"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(4):
            Image.effect_noise((16, 16), 50).convert("RGB").save(tmp_path / "photos" / name / f"{i}.png")
    bad = tmp_path / "photos" / "viper" / "1.png"
    bad.write_bytes(bad.read_bytes()[:200])
    args = DIGITS + ["data.name=imagefolder", f"data.root={tmp_path}/photos", "data.image_size=16", f"output_dir={tmp_path}/run"]
    expect_failure(args, str(bad), "data.bad_images=skip")
    assert not (tmp_path / "run").exists()  # before any work: not even the run directory


def test_corrupt_checkpoint_on_resume(digits_args, tmp_path):
    run(digits_args("trainer.epochs=1"))
    last = tmp_path / "run" / "checkpoints" / "last"
    (last / "optimizer.bin").write_bytes(b"\x00garbage")
    expect_failure(digits_args("trainer.epochs=1"), "corrupt", "trainer.resume=none")


def test_changed_schedule_on_resume_is_refused(digits_args, tmp_path):
    run(digits_args("trainer.epochs=1", "trainer.stop_after_steps=3"))
    expect_failure(digits_args("trainer.epochs=3"), "trainer.epochs (1 -> 3)", "output_dir", nproc=1)
