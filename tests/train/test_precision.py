"""train.precision / channels_last / sync_batchnorm: bf16 runs on CPU with the heads in float32,
fp16 on CPU is refused in one line, channels_last trains the same model, bad values are named."""

from __future__ import annotations

import copy

import pytest
import torch

from facemetric import distributed
from facemetric.data.samplers import UniformBatchSampler
from facemetric.data.tensor_dataset import TensorImageDataset
from facemetric.errors import ConfigError
from facemetric.losses import build_loss
from facemetric.losses.arcface import ArcFaceLoss
from facemetric.models import build_model
from facemetric.train.config import resolve_config
from facemetric.train.experiment import run_experiment
from facemetric.train.trainer import Trainer
from tests.conftest import tiny_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: a second thread only spins on a busy machine
    yield
    torch.set_num_threads(threads)


def _trainer(precision="fp32", channels_last=False, sync_batchnorm=False, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(1)
    data = TensorImageDataset(torch.randn(32, 1, 8, 8, generator=g), torch.arange(32) % 4)
    model = build_model("lenets++", embedding_dim=8, in_channels=1, input_size=8, widths=[8, 8, 8])
    loss = build_loss("arcface", embedding_dim=8, num_classes=4, margin=0.3, scale=16.0)
    opt = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.05)
    return Trainer(model, loss, data, UniformBatchSampler(32, 16, seed=0), opt, epochs=1,
                   progress=False, precision=precision, channels_last=channels_last,
                   sync_batchnorm=sync_batchnorm)


def _step(trainer):
    images, labels = trainer.dataset.get_batch(list(range(16)))
    return trainer.train_step(images, labels)["loss"]


def test_bf16_on_cpu_runs_the_backbone_in_bf16_and_the_head_in_fp32(monkeypatch):
    seen: dict[str, torch.dtype] = {}
    trainer = _trainer("bf16")
    trainer.model.fc.register_forward_hook(lambda m, i, o: seen.update(backbone=o.dtype))
    trainer.loss_fn.register_forward_pre_hook(lambda m, a: seen.update(loss_input=a[0].dtype))
    target = ArcFaceLoss.target

    def spy(self, theta, cos_y, norms):
        seen["theta"], seen["cos"] = theta.dtype, cos_y.dtype
        out = target(self, theta, cos_y, norms)
        seen["target"] = out.dtype
        return out

    monkeypatch.setattr(ArcFaceLoss, "target", spy)
    before = trainer.model.fc.weight.detach().clone()
    loss_bf16 = _step(trainer)
    assert seen == {"backbone": torch.bfloat16, "loss_input": torch.float32, "theta": torch.float32,
                    "cos": torch.float32, "target": torch.float32}
    assert trainer.model.fc.weight.dtype == torch.float32  # the master weights stay fp32
    assert not torch.equal(before, trainer.model.fc.weight)  # a step was taken
    # the same step in fp32: equal within bf16's resolution (8 bits of mantissa)
    loss_fp32 = _step(_trainer("fp32"))
    assert loss_bf16 == pytest.approx(loss_fp32, rel=3e-2)
    assert loss_bf16 != loss_fp32


def test_fp16_on_cpu_is_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        _trainer("fp16")
    assert str(err.value) == "train.precision: fp16 needs a CUDA device (train.device is cpu); use bf16 on CPU"
    with pytest.raises(ConfigError, match=r"^train\.precision: expected one of"):
        resolve_config(tiny_config(), ["train.precision=fp8"])
    with pytest.raises(ConfigError, match=r"^train\.channels_last: expected true or false"):
        resolve_config(tiny_config(), ["train.channels_last=yes please"])


def test_channels_last_trains_the_same_model():
    a, b = _trainer("fp32"), _trainer("fp32", channels_last=True)
    conv = b.model.features[0][2].weight  # [8, 8, 5, 5]: the two layouts differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for _ in range(3):
        torch.testing.assert_close(_step(b), _step(a), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


def test_sync_batchnorm_is_a_no_op_on_one_process_and_refused_on_cpu_processes(monkeypatch):
    _step(_trainer(sync_batchnorm=True))  # one process: nothing to synchronise
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match=r"^train\.sync_batchnorm: PyTorch's SyncBatchNorm runs on CUDA"):
        _trainer(sync_batchnorm=True)


def test_a_bf16_channels_last_recipe_trains_and_records_its_switches(tmp_path):
    cfg = tiny_config(epochs=1)
    cfg["data"]["test_fraction"] = 0.8
    result = run_experiment(copy.deepcopy(cfg), ["train.precision=bf16", "train.channels_last=true"],
                            run_dir=tmp_path, progress=False)
    saved = (tmp_path / "config.yaml").read_text()
    assert "precision: bf16" in saved and "channels_last: true" in saved
    assert result.final["train"]["loss"] == pytest.approx(result.history[0]["loss"])
    assert torch.isfinite(torch.tensor(result.final["train"]["loss"]))
