import random
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from facemetric.data.samplers import (
    PKBatchSampler,
    UniformBatchSampler,
    describe_identity_counts,
)
from facemetric.errors import ConfigError, DataError


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


# ----------------------------------------------------------------------------- uniform
@pytest.mark.parametrize(
    "n, bs, drop, n_batches", [(10, 3, False, 4), (10, 3, True, 3), (9, 3, True, 3)]
)
def test_uniform_every_index_once(n, bs, drop, n_batches):
    s = UniformBatchSampler(n, bs, seed=5, drop_last=drop)
    batches = _epoch(s, 0)
    assert len(s) == n_batches == len(batches)
    flat = [i for b in batches for i in b]
    assert all(len(b) == bs for b in batches[:-1])
    if drop:
        assert len(flat) == n_batches * bs and len(set(flat)) == len(flat)
    else:
        assert sorted(flat) == list(range(n))


def test_uniform_determinism_and_epochs():
    a = UniformBatchSampler(100, 10, seed=3)
    b = UniformBatchSampler(100, 10, seed=3)
    assert _epoch(a, 2) == _epoch(b, 2)
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(UniformBatchSampler(100, 10, seed=4), 0)
    # independent of the global RNG
    torch.manual_seed(123)
    random.seed(1)
    x = _epoch(a, 5)
    torch.manual_seed(999)
    torch.rand(10)
    assert _epoch(a, 5) == x


def test_uniform_resume_reproduces():
    uninterrupted = UniformBatchSampler(50, 8, seed=11)
    orders = [_epoch(uninterrupted, e) for e in range(4)]
    resumed = UniformBatchSampler(50, 8, seed=11)  # a fresh process resuming at epoch 2
    assert _epoch(resumed, 2) == orders[2]
    assert _epoch(resumed, 3) == orders[3]


def test_uniform_with_dataloader():
    ds = TensorDataset(torch.arange(7))
    s = UniformBatchSampler(7, 3, seed=0)
    got = sorted(int(v) for (batch,) in DataLoader(ds, batch_sampler=s) for v in batch)
    assert got == list(range(7))


def test_uniform_errors():
    with pytest.raises(ConfigError, match=r"^sampler\.batch_size: expected a positive integer"):
        UniformBatchSampler(10, 0)
    with pytest.raises(DataError, match="empty"):
        UniformBatchSampler(0, 4)
    with pytest.raises(DataError, match="drop_last"):
        UniformBatchSampler(3, 4, drop_last=True)


# ----------------------------------------------------------------------------- PK
def _labels(counts):
    out = []
    for ident, c in enumerate(counts):
        out += [ident] * c
    random.Random(0).shuffle(out)
    return out


def test_pk_batches_are_p_identities_times_k_images():
    counts = [6, 5, 8, 1, 4, 9, 5, 7, 3, 6, 5, 10]
    labels = _labels(counts)
    s = PKBatchSampler(labels, people_per_batch=3, images_per_person=4, seed=1)
    # eligible: >= 4 images -> all but counts 1 and 3 -> 10 identities; 10 // 3 = 3 batches
    assert s.num_identities == 10 and len(s) == 3 and s.batch_size == 12
    batches = _epoch(s, 0)
    assert len(batches) == 3
    seen = []
    for b in batches:
        assert len(b) == 12 and len(set(b)) == 12  # K distinct images (no repeats)
        ids = [labels[i] for i in b]
        blocks = [ids[j * 4 : (j + 1) * 4] for j in range(3)]
        assert all(len(set(block)) == 1 for block in blocks)
        people = [block[0] for block in blocks]
        assert len(set(people)) == 3
        assert all(counts[p] >= 4 for p in people)
        seen += people
    # consumed in order: 9 identities in 3 batches are all different
    assert len(set(seen)) == 9


def test_pk_reshuffles_when_exhausted_and_never_repeats_in_batch():
    labels = _labels([3] * 5)
    s = PKBatchSampler(labels, people_per_batch=2, images_per_person=2, batches_per_epoch=20)
    batches = _epoch(s, 0)
    assert len(batches) == 20
    use = Counter()
    for b in batches:
        ids = [labels[i] for i in b]
        assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
        use.update({ids[0], ids[2]})
    assert set(use) == set(range(5))
    assert max(use.values()) - min(use.values()) <= 2  # balanced use of identities


def test_pk_allow_repeats():
    labels = _labels([2, 2, 3, 5])
    with pytest.raises(DataError):
        PKBatchSampler(labels, people_per_batch=2, images_per_person=4)
    s = PKBatchSampler(labels, 2, 4, allow_repeats=True, batches_per_epoch=5)
    for b in _epoch(s, 1):
        ids = [labels[i] for i in b]
        for j in range(2):
            block = b[j * 4 : (j + 1) * 4]
            assert len({labels[i] for i in block}) == 1
            n_avail = Counter(labels)[labels[block[0]]]
            assert len(set(block)) == min(4, n_avail)  # all own images used, rest repeated
        assert ids[0] != ids[4]


def test_pk_singletons_not_eligible():
    labels = _labels([1, 1, 1, 2, 2])
    s = PKBatchSampler(labels, 2, 2)
    assert s.num_identities == 2
    used = {labels[i] for b in _epoch(s, 0) for i in b}
    assert used == {3, 4}


def test_pk_determinism_epochs_and_resume():
    labels = _labels([5] * 20)
    a = PKBatchSampler(labels, 4, 3, seed=7)
    b = PKBatchSampler(labels, 4, 3, seed=7)
    assert _epoch(a, 3) == _epoch(b, 3)
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(PKBatchSampler(labels, 4, 3, seed=8), 0)
    orders = [_epoch(a, e) for e in range(3)]
    resumed = PKBatchSampler(labels, 4, 3, seed=7)
    torch.manual_seed(42)
    assert _epoch(resumed, 2) == orders[2]


def test_pk_accepts_tensor_labels_and_string_labels():
    t = torch.tensor(_labels([3, 3, 3]))
    assert len(_epoch(PKBatchSampler(t, 2, 2), 0)[0]) == 4
    s = PKBatchSampler(["a", "a", "b", "b", "c"], 2, 2)
    assert s.num_identities == 2


def test_pk_error_messages():
    labels = _labels([6] * 12 + [1] * 3)
    with pytest.raises(DataError) as info:
        PKBatchSampler(labels, people_per_batch=30, images_per_person=5)
    msg = str(info.value)
    assert msg.startswith(
        "PK sampler: needs 30 identities with at least 5 images (K=5 without repeats), "
        "the data has 12"
    )
    assert "15 identities" in msg and "\n" not in msg
    with pytest.raises(DataError, match="with at least 2 images \\(K=5 with repeats\\)"):
        PKBatchSampler(labels, 30, 5, allow_repeats=True)
    with pytest.raises(DataError, match="people_per_batch must be an integer >= 2"):
        PKBatchSampler(labels, 1, 5)
    with pytest.raises(DataError, match="images_per_person must be an integer >= 2"):
        PKBatchSampler(labels, 2, 1)
    with pytest.raises(DataError, match="labels are empty"):
        PKBatchSampler([], 2, 2)
    with pytest.raises(ConfigError, match=r"^sampler\.batches_per_epoch"):
        PKBatchSampler(labels, 2, 2, batches_per_epoch=0)


def test_describe_identity_counts():
    info = describe_identity_counts([0, 0, 0, 1, 2, 2, 5, 5, 5, 5])
    assert info == {
        "num_images": 10,
        "num_identities": 4,
        "min_per_identity": 1,
        "median_per_identity": 2.5,
        "max_per_identity": 4,
        "identities_with_2_or_more": 3,
    }
    assert describe_identity_counts([])["num_identities"] == 0


# ----------------------------------------------------------------------------- registry
def test_sampler_registry_lives_beside_the_samplers():
    from facemetric.data.samplers import SAMPLERS
    from facemetric.train.experiment import SAMPLERS as experiment_samplers

    assert experiment_samplers is SAMPLERS  # the experiment uses the data package's registry
    labels = torch.arange(6).repeat_interleave(4)
    data = TensorDataset(torch.zeros(24, 1), labels)
    data.labels = labels
    uniform = SAMPLERS.build("uniform", dataset=data, seed=1, batch_size=5)
    assert isinstance(uniform, UniformBatchSampler) and len(uniform) == 5
    for name in ("pk", "people-x-images"):
        pk = SAMPLERS.build(name, dataset=data, seed=1, people_per_batch=3, images_per_person=2)
        assert isinstance(pk, PKBatchSampler)
        pk.set_epoch(0)
        batch = next(iter(pk))
        assert len(batch) == 6 and len({int(labels[i]) for i in batch}) == 3


# ----------------------------------------------------------------------------- rank sharding
def _gathered(make, world, epoch=1):
    """The rank parts of every batch concatenated in rank order (what all_gather gives)."""
    parts = []
    for r in range(world):
        parts.append(_epoch(make().shard(r, world), epoch))
    assert len({len(p) for p in parts}) == 1
    return [sum((p[b] for p in parts), []) for b in range(len(parts[0]))], parts


@pytest.mark.parametrize("world", [2, 3])
def test_uniform_shards_gather_to_the_one_process_batches(world):
    make = lambda: UniformBatchSampler(23, 8, seed=4)  # noqa: E731
    one = _epoch(make(), 1)
    gathered, parts = _gathered(make, world)
    assert gathered == one  # same global batches, same order
    for b in range(len(one)):  # contiguous parts, sizes differ by at most one
        sizes = [len(p[b]) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(one[b])


def test_uniform_shard_drops_a_last_batch_smaller_than_the_world():
    # 17 = 2 x 8 + 1: the 1-sample batch cannot give every one of 2 ranks a sample
    s = UniformBatchSampler(17, 8, seed=0).shard(1, 2)
    assert len(s) == 2 == len(_epoch(s, 0))
    with pytest.raises(ConfigError, match="sampler.batch_size"):
        UniformBatchSampler(17, 2, seed=0).shard(0, 3)
    with pytest.raises(ValueError, match="rank 2"):
        UniformBatchSampler(17, 8, seed=0).shard(2, 2)


@pytest.mark.parametrize("world", [2, 3])
def test_pk_shards_keep_whole_identities_and_gather_to_the_one_process_batches(world):
    labels = [i // 5 for i in range(5 * 12)]  # 12 identities x 5 images
    make = lambda: PKBatchSampler(labels, people_per_batch=4, images_per_person=3, seed=2)  # noqa: E731
    one = _epoch(make(), 1)
    gathered, parts = _gathered(make, world)
    assert gathered == one
    for p in parts:
        for batch in p:
            counts = Counter(labels[i] for i in batch)
            assert set(counts.values()) == {3}  # each identity of a rank with all its K images
    with pytest.raises(ConfigError, match="people_per_batch"):
        make().shard(0, 5)
