"""facenet's two-phase triplet selection: selection on the large sample, training improves a
measured quantity, resume, recipe errors."""

import pytest
import torch

from facemetric.distances import SquaredL2Distance
from facemetric.errors import ConfigError
from facemetric.losses.miners import ConsecutiveTripletsMiner
from facemetric.train.config import load_config
from facemetric.train.experiment import build_experiment
from facemetric.train.two_phase import TwoPhaseSampler

RECIPE = "configs/digits-triplet-two-phase.yaml"
TINY = [
    "train.eval_every=0", "model.embedding_dim=16", "schedule.warmup_epochs=0",
    "sampler.images_per_person=6", "sampler.batches_per_epoch=5",
]


def _experiment(tmp_path, *overrides):
    cfg = load_config(RECIPE, [*TINY, *overrides])
    return build_experiment(cfg, tmp_path, progress=False)


def _hinge_and_gap(model, x, y, margin=0.2):
    """Mean triplet hinge over ALL valid triplets of (x, y), and mean d(neg) - mean d(pos)."""
    model.eval()
    with torch.no_grad():
        d = SquaredL2Distance().pairwise(model(x))
    model.train()
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(len(y), dtype=torch.bool)
    valid = pos[:, :, None] & ~same[:, None, :]
    hinge = torch.relu(d[:, :, None] - d[:, None, :] + margin)[valid].mean()
    return float(hinge), float(d[~same].mean() - d[pos].mean())


def test_two_phase_training_improves_the_triplet_hinge(tmp_path):
    exp = _experiment(tmp_path, "train.epochs=2")
    sampler = exp.trainer.batch_sampler
    assert isinstance(sampler, TwoPhaseSampler) and len(sampler) == 5
    assert isinstance(exp.loss.miner, ConsecutiveTripletsMiner)  # the loss reads triplets
    ds = exp.data.train
    x, y = ds.get_batch(torch.arange(0, len(ds), len(ds) // 250))  # fixed images, all digits
    hinge0, gap0 = _hinge_and_gap(exp.model, x, y)
    exp.trainer.fit()
    hinge1, gap1 = _hinge_and_gap(exp.model, x, y)
    assert hinge1 < 0.8 * hinge0 and gap1 > gap0 + 0.1  # measured: 0.151 -> 0.080, 0.05 -> 0.35
    records = [r for r in exp.trainer.history if r["split"] == "train"]
    assert [r["num_triplets"] for r in records] == [10.0, 10.0]  # 30 images = 10 triplets


def test_selection_is_made_on_the_whole_sample_not_per_mini_batch(tmp_path):
    exp = _experiment(tmp_path, "train.epochs=1")
    sampler = exp.trainer.batch_sampler
    seen = []
    selector = sampler.selector
    original = selector.mine

    def spy(matrix, labels):
        seen.append((matrix.shape[0], len(set(labels.tolist()))))
        return original(matrix, labels)

    selector.mine = spy
    state = sampler.selector.generator.get_state()
    sampler.set_epoch(0)
    batches = list(sampler)
    # every selection saw the large sample: 10 people x 6 images, not a 30-image mini-batch
    assert seen and all(s == (60, 10) for s in seen)
    last = sampler.last_round
    assert (last["people"], last["images"]) == (10, 60) and last["triplets"] > 10
    assert len(batches) == 5 and all(len(b) == 30 for b in batches)
    # the mini-batches are the triplets selected on the sample, a p n a p n ...
    labels = exp.data.train.labels
    for b in batches:
        for i in range(0, 30, 3):
            a, p, n = b[i : i + 3]
            assert labels[a] == labels[p] != labels[n] and a != p
    assert sampler.rounds == 1  # one round (>= 50 triplets) filled the epoch: select again
    selector.mine = original
    selector.generator.set_state(state)
    a, p, n = sampler.select(last["indices"])
    idx = torch.as_tensor(last["indices"])
    chosen = set(zip(idx[a].tolist(), idx[p].tolist(), idx[n].tolist(), strict=True))
    trained = {tuple(b[i : i + 3]) for b in batches for i in range(0, 30, 3)}
    assert trained <= chosen and len(trained) == 50


def test_resume_continues_a_two_phase_run_exactly(tmp_path):
    overrides = ("train.epochs=2", "sampler.batches_per_epoch=2", "loss.strategy=random-violating")
    whole = _experiment(tmp_path / "whole", *overrides)
    whole.trainer.fit()
    part = _experiment(tmp_path / "part", *overrides)
    part.trainer.fit(until_epoch=1)
    resumed = _experiment(tmp_path / "part", *overrides)
    resumed.trainer.fit(resume=True)
    assert resumed.trainer.epoch == 2
    pairs = zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True)
    for (key, u), v in pairs:
        assert torch.equal(u, v), key
    assert [r["loss"] for r in whole.trainer.history] == [r["loss"] for r in resumed.trainer.history]


def test_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match="sampler.batch_size: expected a multiple of 3"):
        _experiment(tmp_path / "a", "sampler.batch_size=32")
    with pytest.raises(ConfigError, match="two-phase needs a loss with a triplet miner"):
        _experiment(tmp_path / "b", "loss.name=softmax")
    # a contrastive loss with a triplet miner trains on the selected triplets as pairs
    exp = _experiment(
        tmp_path / "c", "loss.name=contrastive", "loss.miner=semi-hard", "train.epochs=1",
        "sampler.batches_per_epoch=1",
    )
    exp.trainer.fit()
    last = exp.trainer.history[-1]
    assert last["num_pos_pairs"] == last["num_neg_pairs"] == 10
