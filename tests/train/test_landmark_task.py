"""The ``landmarks`` training task (facemetric.train.landmark_task): a tiny run on a handful of
real lfw-5590 photos that measurably fits them, resume = an uninterrupted run, the run
directory and artifact, detector-box matching and caching, and one-line config errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facemetric.align.landmark_net import crop_matrix, from_crop_units, load_landmark_model
from facemetric.align.landmarks import build_landmarker
from facemetric.data.face_boxes import read_face_boxes
from facemetric.errors import ConfigError
from facemetric.train.landmark_task import (
    detector_boxes,
    evaluate_face_set,
    landmark_loss,
    load_face_set,
    load_landmark_config,
    make_batch,
    match_detection,
    predict_face_set,
    run_landmark_task,
)
from facemetric.train.tasks import TASKS, task_of

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs").glob("landmarks-*.yaml"))
ANNOTATIONS = REPO.parent / "shared" / "data" / "lfw-5590" / "annotations.csv"
needs_data = pytest.mark.skipif(not ANNOTATIONS.is_file(), reason=f"{ANNOTATIONS} not present")

#: a tiny, fast run: 24 photos, 32-px crops, width 8, no augmentation, 20 epochs
TINY = [
    f"data.annotations={ANNOTATIONS}", "data.boxes=labelled", "data.limit=24", "data.test_limit=8",
    "data.cache_dir=null", "model.size=32", "model.width=8", "model.dropout=0.0",
    "augment.shift=0.0", "augment.scale=0.0", "augment.angle=0.0", "augment.flip=false",
    "augment.color=0.0", "train.batch_size=8", "train.epochs=20", "train.eval_every=0",
    "train.threads=1", "train.keep_checkpoints=0", "train.device=cpu", "optimizer.lr=0.003",
    "schedule.warmup_epochs=0", "eval.flip=false",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    if not ANNOTATIONS.is_file():
        pytest.skip(f"{ANNOTATIONS} not present")
    run = tmp_path_factory.mktemp("lm") / "run"
    threads = torch.get_num_threads()
    try:
        result = run_landmark_task(RECIPES[0], overrides=TINY, run_dir=run, progress=False)
    finally:
        torch.set_num_threads(threads)
    return result


def test_recipes_resolve_and_dispatch():
    assert RECIPES, "configs/ has no landmarks-*.yaml recipe"
    assert "landmarks" in TASKS
    for path in RECIPES:
        assert task_of(path) == "landmarks"
        if ANNOTATIONS.is_file():
            cfg = load_landmark_config(path)
            assert cfg["name"] == path.stem
            assert Path(cfg["data"]["annotations"]).resolve() == ANNOTATIONS.resolve()  # (symlinks either side)


@needs_data
def test_tiny_run_fits_its_photos(tiny_run):
    """20 epochs on 24 photos: the error on those photos falls well below the mean shape's."""
    cfg = load_landmark_config(RECIPES[0], TINY)
    faces = load_face_set(cfg["data"], "train", 24, Path("unused"))
    _, targets = make_batch(faces, np.arange(len(faces)), 32, 0.25, None, None)
    mean = targets.mean(axis=0)
    baseline = np.stack([from_crop_units(mean, crop_matrix(b, 32, 0.25), 32) for b in faces.boxes])
    before = evaluate_face_set(baseline, faces, 0.1)["nme"]
    model, _ = load_landmark_model(tiny_run.run_dir)
    after = evaluate_face_set(predict_face_set(model, faces, 0.25, False, "cpu"), faces, 0.1)["nme"]
    assert after < 0.6 * before, (before, after)
    losses = [r["loss"] for r in tiny_run.history if r["split"] == "train"]
    assert losses[-1] < 0.5 * losses[0]


@needs_data
def test_run_directory_and_artifact(tiny_run):
    run = tiny_run.run_dir
    for name in ("config.yaml", "run.json", "metrics.jsonl", "report.md", "report.html", "test_examples.png"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "train"] == list(range(1, 21))
    test = [r for r in records if r["split"] == "test"]
    assert len(test) == 1 and test[0]["faces"] == 8 and set(test[0]["eyes"]["points"]) == {"left_eye", "right_eye"}
    assert tiny_run.final["test"]["nme"] == test[0]["nme"]
    assert "test NME" in tiny_run.summary()
    card = json.loads((run / "landmark_model" / "landmark_model.json").read_text())
    assert card["trained_on_boxes"] == "labelled" and card["crop"] == {"size": 32, "margin": 0.25}
    assert card["test_metrics"]["nme"] == pytest.approx(test[0]["nme"])
    # the artifact is what the learned5 landmarker loads; its predictions are the run's
    lm = build_landmarker("learned5", path=run)
    rec = read_face_boxes(ANNOTATIONS, split="test")[0]
    from facemetric.data.image_io import read_image

    pts = lm.predict(read_image(rec.path), rec.box[None])
    assert pts.shape == (1, 5, 2) and np.isfinite(pts).all()
    assert not list(run.rglob("*.tmp*"))


@needs_data
def test_resume_continues_the_same_run(tiny_run, tmp_path):
    """Dropping the newest checkpoint and resuming gives the uninterrupted run's weights."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run.run_dir, copy)
    (copy / "checkpoints" / "checkpoint-epoch0020.pt").unlink()
    threads = torch.get_num_threads()
    try:
        resumed = run_landmark_task(None, overrides=None, run_dir=copy, resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    for name, value in tiny_run.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)
    epochs = [r["epoch"] for r in resumed.history if r["split"] == "train"]
    assert epochs == list(range(1, 21))


@needs_data
def test_init_from_a_trained_model(tiny_run, tmp_path):
    threads = torch.get_num_threads()
    try:
        with pytest.raises(ConfigError, match=r"^model\.init: .* network with margin 0.25, the recipe asks"):
            run_landmark_task(RECIPES[0], overrides=TINY + [f"model.init={tiny_run.run_dir}", "model.width=16"],
                              run_dir=tmp_path / "bad", progress=False)
        again = run_landmark_task(RECIPES[0], overrides=TINY + [f"model.init={tiny_run.run_dir}", "train.epochs=1",
                                                              "optimizer.lr=0.0001"],
                                  run_dir=tmp_path / "ft", progress=False)
    finally:
        torch.set_num_threads(threads)
    losses = [r["loss"] for r in tiny_run.history if r["split"] == "train"]
    # one more epoch from the fitted weights starts where the tiny run ended, not at its start
    assert again.history[0]["loss"] < 0.5 * losses[0]
    card = json.loads((tmp_path / "ft" / "landmark_model" / "landmark_model.json").read_text())
    assert card["initialised_from"] == str(tiny_run.run_dir)


def test_loss_is_error_over_inter_ocular_distance():
    target = torch.tensor([[[0.0, 0.0], [0.5, 0.0], [0.2, 0.2], [0.1, 0.4], [0.4, 0.4]]])
    pred = target.clone()
    pred[0, 2] += torch.tensor([0.05, -0.1])  # L1 0.15 -> 0.3 of the eye distance 0.5
    assert float(landmark_loss(pred, target)) == pytest.approx(0.3 / 5)


def test_detection_matching_and_cache(tmp_path, monkeypatch):
    labelled = np.array([10.0, 10.0, 50.0, 50.0])
    dets = np.array([[100.0, 100.0, 140.0, 140.0], [14.0, 12.0, 52.0, 54.0], [0.0, 0.0, 30.0, 30.0]])
    np.testing.assert_array_equal(match_detection(labelled, dets, 0.3), dets[1])
    assert match_detection(labelled, dets[:1], 0.3) is None
    assert match_detection(labelled, np.zeros((0, 4)), 0.3) is None
    # IoU of [0,0,30,30] with the labelled box: 400 / (1600 + 900 - 400)
    assert match_detection(labelled, dets[2:], 400 / 2100 - 1e-9) is not None
    assert match_detection(labelled, dets[2:], 400 / 2100 + 1e-9) is None

    csv = tmp_path / "annotations.csv"
    csv.write_text("x")
    from facemetric.data.face_boxes import FaceBoxRecord

    recs = [FaceBoxRecord("train", tmp_path / f"{i}.jpg", f"{i}.jpg", 40, 40,
                          np.array([8.0, 8.0, 32.0, 32.0], np.float32) + i, np.zeros((5, 2), np.float32), "x")
            for i in range(2)]
    images = [np.zeros((40, 40, 3), np.uint8), np.zeros((60, 60, 3), np.uint8)]
    data = {"annotations": str(csv), "boxes": "center", "detector_options": {"fraction": 0.6}, "min_iou": 0.5}
    boxes, detected = detector_boxes(data, recs, images, tmp_path / "cache")
    # centre box of side 24 in the 40-px photo matches the first labelled box exactly; the
    # 60-px photo's (side 36 at 12) overlaps the second's [9, 33] by 21^2/(36^2+24^2-21^2) < 0.5
    np.testing.assert_allclose(boxes[0], [8, 8, 32, 32])
    np.testing.assert_allclose(boxes[1], recs[1].box)
    assert detected.tolist() == [True, False]
    cached = list((tmp_path / "cache").glob("boxes-center-*.json"))
    assert len(cached) == 1

    def no_detector(*a, **k):
        raise AssertionError("the cached detections should be reused")

    monkeypatch.setattr("facemetric.train.landmark_task.build_detector", no_detector)
    boxes2, _ = detector_boxes(data, recs, images, tmp_path / "cache")
    np.testing.assert_array_equal(boxes2, boxes)


@pytest.mark.parametrize(
    "override,msg",
    [
        ("model.size=48", r"^model\.size: expected a multiple of 32, got 48$"),
        ("train.epochs=0", r"^train\.epochs: expected an integer >= 1, got 0$"),
        ("optimizer.lr=fast", r"^optimizer\.lr: expected a number in \(0, inf\], got 'fast'$"),
        ("augment.flip=maybe", r"^augment\.flip: expected true or false, got 'maybe'$"),
        ("model.depth=3", r"^overrides: unknown key 'model\.depth'"),
        ("data.annotations=/no/such.csv", r"^data\.annotations: /no/such\.csv does not exist$"),
    ],
)
def test_config_errors_are_one_line(override, msg, tmp_path):
    recipe = tmp_path / "r.yaml"
    ann = tmp_path / "a.csv"
    ann.write_text("x")
    recipe.write_text(f"task: landmarks\nname: r\ndata:\n  annotations: {ann.name}\n")
    assert load_landmark_config(recipe)["data"]["annotations"] == str(ann)
    with pytest.raises(ConfigError, match=msg):
        load_landmark_config(recipe, [override])
    recipe.write_text("task: landmarks\nname: r\nmodle: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'modle'"):
        load_landmark_config(recipe)
    recipe.write_text("task: landmarks\nname: r\n")
    with pytest.raises(ConfigError, match=r"^data\.annotations: required"):
        load_landmark_config(recipe)
