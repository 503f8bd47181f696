import math

import pytest
import torch
from torch import nn

from facemetric.errors import ConfigError
from facemetric.train.schedules import (
    SCHEDULES,
    build_scheduler,
    lr_from_schedule,
    read_schedule_file,
    schedule_file_stop_epoch,
)


def _opt(lr=0.1):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(sched, n):
    """lr used by optimizer steps 0..n-1 (scheduler stepped after each)."""
    out = []
    for _ in range(n):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()
    return out


def test_names():
    assert {"constant", "step", "cosine", "file"} <= set(SCHEDULES.names())


def test_constant():
    s = build_scheduler("constant", _opt(0.3), steps_per_epoch=4, epochs=3)
    assert _lrs(s, 12) == [0.3] * 12


def test_step_milestones_per_epoch():
    s = build_scheduler("step", _opt(1.0), steps_per_epoch=2, epochs=6, milestones=[2, 4])
    lrs = _lrs(s, 12)
    assert lrs[:4] == [1.0] * 4
    assert lrs[4:8] == pytest.approx([0.1] * 4)
    assert lrs[8:] == pytest.approx([0.01] * 4)
    s = build_scheduler("step", _opt(1.0), steps_per_epoch=2, epochs=6, milestones=[1], gamma=0.5)
    assert _lrs(s, 4) == pytest.approx([1.0, 1.0, 0.5, 0.5])


def test_cosine_values():
    base, lo, spe, epochs = 0.2, 0.02, 5, 4
    s = build_scheduler("cosine", _opt(base), steps_per_epoch=spe, epochs=epochs, min_lr=lo)
    lrs = _lrs(s, spe * epochs + 1)
    total = spe * epochs
    for k in (0, 1, 7, 10, 13, 19, 20):
        expected = lo + (base - lo) * (1 + math.cos(math.pi * k / total)) / 2
        assert lrs[k] == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(base)
    assert lrs[10] == pytest.approx((base + lo) / 2)
    assert lrs[20] == pytest.approx(lo)


def test_warmup_then_cosine():
    base, spe, epochs = 1.0, 4, 5
    s = build_scheduler("cosine", _opt(base), steps_per_epoch=spe, epochs=epochs,
                        warmup_epochs=1.5)
    lrs = _lrs(s, 20)
    w = 6  # round(1.5 * 4)
    assert lrs[:w] == pytest.approx([(k + 1) / w for k in range(w)])
    assert lrs[0] > 0
    total = spe * epochs - w
    for k in (6, 9, 13, 19):
        assert lrs[k] == pytest.approx((1 + math.cos(math.pi * (k - w) / total)) / 2)


def test_warmup_composes_with_step_and_constant():
    s = build_scheduler("step", _opt(1.0), steps_per_epoch=2, epochs=4, warmup_epochs=1.0,
                        milestones=[1])
    # steps 0,1: warm-up 1/2, 2/2 of epoch-0 lr 1.0; from step 2 (epoch 1) 0.1
    assert _lrs(s, 4) == pytest.approx([0.5, 1.0, 0.1, 0.1])
    s = build_scheduler("constant", _opt(0.4), steps_per_epoch=10, epochs=2, warmup_epochs=0.4)
    assert _lrs(s, 5) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])


def test_state_dict_round_trip_continues_identically(tmp_path):
    path = tmp_path / "sched.txt"
    path.write_text("0: 0.5\n2: 0.05\n")
    cases = [
        ("cosine", {"min_lr": 0.01}),
        ("step", {"milestones": [1, 2]}),
        ("file", {"path": str(path)}),
    ]
    for name, opts in cases:
        ref = build_scheduler(name, _opt(), steps_per_epoch=3, epochs=4, warmup_epochs=0.5, **opts)
        full = _lrs(ref, 12)
        a = build_scheduler(name, _opt(), steps_per_epoch=3, epochs=4, warmup_epochs=0.5, **opts)
        _lrs(a, 5)
        state = torch.load(_save(tmp_path, a.optimizer.state_dict(), a.state_dict()),
                           weights_only=True)
        b = build_scheduler(name, _opt(), steps_per_epoch=3, epochs=4, warmup_epochs=0.5, **opts)
        b.optimizer.load_state_dict(state["opt"])
        b.load_state_dict(state["sched"])
        assert _lrs(b, 7) == pytest.approx(full[5:]), name


def _save(tmp_path, opt_state, sched_state):
    p = tmp_path / "ckpt.pt"
    torch.save({"opt": opt_state, "sched": sched_state}, p)
    return p


FACENET = """# Learning rate schedule
# Maps an epoch number to a learning rate

0:  0.1
65: 0.01   # drop
77: 0.001
"""


def test_read_schedule_file_facenet_example(tmp_path):
    p = tmp_path / "lr_schedule.txt"
    p.write_text(FACENET)
    entries = read_schedule_file(p)
    assert entries == [(0, 0.1), (65, 0.01), (77, 0.001)]
    assert [lr_from_schedule(entries, e) for e in (0, 64, 65, 76, 77, 500)] == [
        0.1, 0.1, 0.01, 0.01, 0.001, 0.001,
    ]
    assert schedule_file_stop_epoch(p) is None


def test_file_schedule_absolute_lr_per_epoch(tmp_path):
    p = tmp_path / "lr_schedule.txt"
    p.write_text("0: 0.1\n2: 0.01\n3: -1\n")
    s = build_scheduler("file", _opt(123.0), steps_per_epoch=2, epochs=4, path=str(p))
    # base lr 123 is ignored; file epochs are 1-based like facenet's training loop, so the
    # trainer's epoch 0 is the file's epoch 1; the file's epoch 3 says stop -> lr 0
    assert _lrs(s, 8) == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.0, 0.0, 0.0, 0.0])
    assert schedule_file_stop_epoch(p) == 3


def test_schedule_file_dash_means_stop(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("0: 0.05\n100: 0.005\n150: -\n")
    assert read_schedule_file(p)[-1] == (150, -1.0)
    assert schedule_file_stop_epoch(p) == 150


@pytest.mark.parametrize(
    "text, lineno",
    [
        ("0: 0.1\n# c\nfoo\n", 3),
        ("0: 0.1\n\n1: abc\n", 3),
        ("0 0.1\n", 1),
        ("0: 0.1\n1: 2: 3\n", 2),
    ],
)
def test_schedule_file_bad_line_names_file_and_line(tmp_path, text, lineno):
    p = tmp_path / "lr_schedule.txt"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_schedule_file(p)
    msg = str(info.value)
    assert f"lr_schedule.txt:{lineno}: expected 'epoch: learning_rate', got" in msg
    assert "\n" not in msg


def test_schedule_file_other_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found.*missing.txt"):
        read_schedule_file(tmp_path / "missing.txt")
    p = tmp_path / "s.txt"
    p.write_text("0: 0.1\n5: 0.01\n3: 0.001\n")
    with pytest.raises(ConfigError, match=r"s\.txt:3: epochs must increase"):
        read_schedule_file(p)
    p.write_text("# only comments\n\n")
    with pytest.raises(ConfigError, match="no 'epoch: learning_rate' lines"):
        read_schedule_file(p)
    p.write_text("5: 0.1\n")
    with pytest.raises(ConfigError, match="no learning rate for epoch 1"):
        build_scheduler("file", _opt(), steps_per_epoch=1, epochs=2, path=str(p))
    with pytest.raises(ConfigError, match=r"^schedule\.path:"):
        build_scheduler("file", _opt(), steps_per_epoch=1, epochs=2)


def test_build_scheduler_errors():
    with pytest.raises(ConfigError, match=r"^schedule\.name: unknown schedule 'poly'"):
        build_scheduler("poly", _opt(), steps_per_epoch=1, epochs=1)
    with pytest.raises(ConfigError, match=r"^schedule\.gamma: unknown option for 'cosine'"):
        build_scheduler("cosine", _opt(), steps_per_epoch=1, epochs=1, gamma=0.1)
    with pytest.raises(ConfigError, match=r"^schedule\.warmup_epochs:"):
        build_scheduler("cosine", _opt(), steps_per_epoch=1, epochs=2, warmup_epochs=-1)
    with pytest.raises(ConfigError, match=r"^schedule\.steps_per_epoch:"):
        build_scheduler("cosine", _opt(), steps_per_epoch=0, epochs=2)
    with pytest.raises(ConfigError, match=r"^schedule\.gamma:"):
        build_scheduler("step", _opt(), steps_per_epoch=1, epochs=2, milestones=[1], gamma=0)
