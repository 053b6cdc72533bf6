"""Downloads once per machine, from a real HTTP server on 127.0.0.1: pretrained weights, CIFAR, and
the seed's own recipe (configs/cifar10_mobilenetv2.yaml) end to end on 2 processes."""

import json

import pytest
import torch
import torchvision
from conftest import ROOT, run, summary, tiny_cifar_archive
from local_server import CountingServer

SHUFFLENET = torchvision.models.get_model_weights("shufflenet_v2_x0_5").DEFAULT
MOBILENET = torchvision.models.get_model_weights("mobilenet_v2").DEFAULT


def file_name(weights) -> str:
    return weights.url.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """torchvision's file names with seeded weights (the real ones need internet), and a tiny CIFAR-10 archive."""
    folder = tmp_path_factory.mktemp("mirror")
    for weights, name in ((SHUFFLENET, "shufflenet_v2_x0_5"), (MOBILENET, "mobilenet_v2")):
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model(name, weights=None).state_dict(), folder / file_name(weights))
    tiny_cifar_archive(folder)
    server = CountingServer(folder)
    yield server, folder
    server.close()


def test_pretrained_weights_are_downloaded_once_per_machine_and_every_rank_loads_them(mirror, tmp_path):
    server, folder = mirror
    served = folder / file_name(SHUFFLENET)
    args = ["--config", str(ROOT / "configs" / "digits.yaml"), "data.name=fake", "model.name=shufflenet_v2_x0_5",
            "model.pretrained=true", f"model.weights_mirror={server.url}", f"output_dir={tmp_path / 'run'}"]  # fmt: skip
    run(["2", str(served), str(tmp_path / "reports"), *args], nproc=2, script="tests/workers/pretrained_worker.py",
        env={"TORCH_HOME": str(tmp_path / "torch")})  # fmt: skip
    reports = [json.loads((tmp_path / "reports" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert all(r["body_equal"] and r["head_classes"] == 10 for r in reports)  # served weights, head resized for 10 classes
    assert server.served["/" + served.name] == 1  # once for the machine, not once per rank
    assert (tmp_path / "torch" / "hub" / "checkpoints" / served.name).read_bytes() == served.read_bytes()
    assert not list((tmp_path / "torch" / "hub" / "checkpoints").glob("*.partial"))


def test_the_seed_recipe_downloads_its_data_and_weights_once_and_trains_on_two_processes(mirror, tmp_path):
    server, _ = mirror
    run_dir = tmp_path / "run"
    args = ["--config", str(ROOT / "configs" / "cifar10_mobilenetv2.yaml"), f"output_dir={run_dir}",
            f"data.root={tmp_path / 'data'}", f"data.mirror={server.url}", f"model.weights_mirror={server.url}",
            # cut to the suite's time: 32-px inputs, a short range test (with a fallback: 200 random images
            # may give no descent), three optimizer steps
            "data.image_size=32", "data.batch_size=16", "lr_finder.num_iter=20", "lr_finder.sweep_iter=20",
            "lr_finder.fallback_max_lr=0.001", "trainer.stop_after_steps=3"]  # fmt: skip
    run(args, nproc=2, env={"TORCH_HOME": str(tmp_path / "torch")}, timeout=300)
    info = summary(run_dir)
    assert info["world_size"] == 2 and info["optimizer_steps"] == 3 and info["lr_finder_seconds"] > 0
    assert server.served["/cifar-10-python.tar.gz"] == 1 and server.served["/" + file_name(MOBILENET)] == 1
    assert (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").is_file()
