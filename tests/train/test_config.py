"""Config resolution: defaults <- YAML <- overrides, and one-line errors for bad fields."""

from pathlib import Path

import pytest

from facemetric.errors import ConfigError
from facemetric.train.config import load_config, parse_override, read_yaml

REPO = Path(__file__).resolve().parents[2]


def test_overrides_are_parsed_as_yaml():
    assert parse_override("loss.lambda_=0.1") == (["loss", "lambda_"], 0.1)
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("model.widths=[8, 16, 16]") == (["model", "widths"], [8, 16, 16])
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("epochs")


def test_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nloss:\n  name: center\n  lambda_: 0.01\ntrain:\n  epochs: 5\n")
    cfg = load_config(f, ["loss.lambda_=0.5", "train.epochs=7"])
    assert cfg["loss"] == {"name": "center", "lambda_": 0.5}
    assert cfg["train"]["epochs"] == 7
    assert cfg["optimizer"]["name"] == "sgd"  # default kept


def test_changing_a_component_drops_the_old_components_options(tmp_path):
    cfg = load_config(None, ["optimizer.name=adam"])
    assert cfg["optimizer"] == {"name": "adam", "lr": 0.05, "weight_decay": 5e-4}  # no momentum
    f = tmp_path / "c.yaml"
    f.write_text("optimizer:\n  name: adamw\n  lr: 0.001\n")
    assert load_config(f)["optimizer"] == {"name": "adamw", "lr": 0.001, "weight_decay": 5e-4}
    cfg = load_config(None, ["loss.name=center", "loss.lambda_=0.1"])
    assert cfg["loss"] == {"name": "center", "lambda_": 0.1}


@pytest.mark.parametrize(
    "text,msg",
    [
        ("trian:\n  epochs: 3\n", "unknown key 'trian'"),
        ("train:\n  epoch: 3\n", "unknown key 'train.epoch'"),
        ("train:\n  epochs: 0\n", "train.epochs"),
        ("loss:\n  name: null\n", "loss.name"),
        ("loss: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "mapping"),
    ],
)
def test_bad_config_fields_name_the_field(tmp_path, text, msg):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=msg) as info:
        load_config(f)
    assert str(f) in str(info.value) and "\n" not in str(info.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("no/such.yaml")


def test_shipped_recipes_resolve():
    recipes = sorted((REPO / "configs").glob("*.yaml"))
    assert recipes, "configs/ has no recipes"
    shared = REPO.parent / "shared" / "data"
    for path in recipes:
        if read_yaml(path).get("task", "embedding") != "embedding":
            continue  # other tasks' recipes have their own schema, checked by their tests
        # the schema is checked everywhere; the data paths only where ../shared/data exists
        # (a clean clone without it still runs this test, CI has it beside the clone)
        cfg = load_config(path, check=shared.is_dir())
        assert cfg["name"] == path.stem


def test_digits_recipes_match_the_demo_variants():
    from facemetric.demo import DEMO_VARIANTS, EXTRA_VARIANTS, demo_config
    from facemetric.train.config import DEFAULTS, _merge, validate

    for name, _, _ in DEMO_VARIANTS + EXTRA_VARIANTS:
        cfg = load_config(REPO / "configs" / f"digits-{name}.yaml")
        want = validate(_merge(DEFAULTS, demo_config(name), ""))
        cfg["train"]["eval_every"] = want["train"]["eval_every"]
        assert cfg == want, name


# ----------------------------------------------------------------------- typed schema (issue 11)
@pytest.mark.parametrize(
    "override,msg",
    [
        ("optimizer.lr=fast", r"^optimizer\.lr: expected a number in \(0, inf\), got 'fast'$"),
        ("optimizer.lr=null", r"^optimizer\.lr: expected a number .*got None$"),
        ("optimizer.lr=-0.1", r"^optimizer\.lr: expected a number"),
        ("optimizer.weight_decay=.nan", r"^optimizer\.weight_decay: expected a number"),
        ("train.grad_clip=x", r"^train\.grad_clip: expected a number in \[0, inf\), got 'x'$"),
        ("seed=1.5", r"^seed: expected an integer >= 0, got 1\.5$"),
        ("seed=true", r"^seed: expected an integer"),
        ("model.embedding_dim=-3", r"^model\.embedding_dim: expected a positive integer, got -3$"),
        ("model.embedding_dim=big", r"^model\.embedding_dim: expected a positive integer, got 'big'$"),
        ("train.keep_checkpoints=many", r"^train\.keep_checkpoints: expected an integer >= 0, got 'many'$"),
        ("train.epochs=0", r"^train\.epochs: expected a positive integer, got 0$"),
        ("train.deterministic=maybe", r"^train\.deterministic: expected true or false"),
        ("train.ema_decay=1", r"^train\.ema_decay: expected a number in \[0, 1\)"),
        ("train.head_init=zeros", r"^train\.head_init: expected one of 'auto', 'random', 'class_means'"),
        ("eval.distance=manhattan", r"^eval\.distance: expected one of 'squared_l2'"),
        ("eval.far_target=0", r"^eval\.far_target: expected a number in \(0, 1\)"),
        ("name=null", r"^name: expected a non-empty string"),
        ("train=5", r"^train: expected a mapping of options, got 5$"),
    ],
)
def test_wrong_typed_values_are_one_line_errors_naming_the_key(override, msg):
    with pytest.raises(ConfigError, match=msg) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_numbers_yaml_reads_as_strings_are_accepted_and_integral_floats_become_ints(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optimizer:\n  name: sgd\n  lr: 1e-3\ntrain:\n  epochs: 3.0\n")
    cfg = load_config(f)
    assert cfg["optimizer"]["lr"] == 0.001 and cfg["train"]["epochs"] == 3
    assert isinstance(cfg["train"]["epochs"], int)


def test_the_file_is_named_in_schema_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optimizer:\n  name: sgd\n  lr: fast\n")
    with pytest.raises(ConfigError, match=rf"^optimizer\.lr: expected .*got 'fast' \(in {f}\)$"):
        load_config(f)


def test_config_file_that_is_not_utf8_not_a_file_or_empty(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{f}: not UTF-8 text \(byte 0xe9 at offset 9\)") as info:
        load_config(f)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: is a folder"):
        load_config(tmp_path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"empty\.yaml: the config file is empty"):
        load_config(empty)  # an empty recipe is refused, not silently the defaults
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigError, match=rf"^{scalar}: expected a mapping at the top level"):
        load_config(scalar)


@pytest.mark.parametrize(
    "overrides,msg",
    [
        (["loss.name=center", "loss.lambda_=x"], r"^loss\.lambda_: expected a number, got 'x'$"),
        (["data.input_size=abc"], r"^data\.input_size: expected an integer, got 'abc'$"),
        (["sampler.batch_size=x"], r"^sampler\.batch_size: "),
    ],
)
def test_component_options_of_the_wrong_type_name_section_and_key(overrides, msg):
    from facemetric.train.experiment import build_experiment

    with pytest.raises(ConfigError, match=msg) as info:
        build_experiment(load_config(None, overrides + ["data.input_size=8"] * ("data" not in overrides[0])),
                         None, progress=False)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------- paths against the recipe
def test_paths_resolve_against_the_recipe_folder_and_overrides_against_the_cwd(tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    data = tmp_path / "data" / "faces"
    (data / "a").mkdir(parents=True)
    (tmp_path / "data" / "pairs.txt").write_text("1 1\n")
    recipes.mkdir()
    f = recipes / "r.yaml"
    f.write_text(
        "data:\n  name: folder\n  root: ../data/faces\n  val_pairs: ../data/pairs.txt\n"
        "  cache_dir: cache\n  people: [a, b]\nmodel:\n  name: lenets++\n  pretrained: dlib-resnet-v1\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(f)
    assert cfg["data"]["root"] == str(data)
    assert cfg["data"]["val_pairs"] == str(tmp_path / "data" / "pairs.txt")
    assert cfg["data"]["cache_dir"] == str(recipes / "cache")
    assert cfg["data"]["people"] == ["a", "b"]  # a list of names, not a path
    assert cfg["model"]["pretrained"] == "dlib-resnet-v1"  # a model name, not a path
    (elsewhere / "other").mkdir()
    cfg = load_config(f, ["data.root=other", "data.cache_dir=~/c"])
    assert cfg["data"]["root"] == str(elsewhere / "other")
    assert cfg["data"]["cache_dir"] == str(Path("~/c").expanduser())
    # a dict config (the Python API) resolves against the working directory too
    from facemetric.train.config import resolve_config

    assert resolve_config({"data": {"name": "folder", "root": "other"}})["data"]["root"] == str(elsewhere / "other")


@pytest.mark.parametrize(
    "override,key",
    [("data.root=no/such", "data.root"), ("data.val_pairs=/no/pairs.txt", "data.val_pairs"),
     ("schedule.path=lr.txt", "schedule.path"), ("model.pretrained=./no-model", "model.pretrained")],
)
def test_a_missing_path_names_its_key(tmp_path, monkeypatch, override, key):
    monkeypatch.chdir(tmp_path)
    rel = override.split("=", 1)[1]
    want = Path(rel) if Path(rel).is_absolute() else tmp_path / rel
    with pytest.raises(ConfigError, match=rf"^{key}: {Path(str(want)).as_posix().replace('./', '')}"
                                          r" does not exist$"):
        load_config(None, ["data.name=folder", override])


def test_shipped_recipes_point_where_they_did_when_paths_followed_the_repo_root():
    """The LFW recipes were written for the repository root as working directory
    (``../shared/data/...``); resolved against their own folder they must land there too."""
    import yaml

    for path in sorted((REPO / "configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if raw.get("task", "embedding") != "embedding":
            continue  # other tasks' recipes have their own schema, checked by their tests
        cfg = load_config(path, check=False)
        for key in ("root", "people", "val_pairs", "val_root", "cache_dir"):
            value = raw.get("data", {}).get(key)
            if isinstance(value, str):
                assert value.startswith("../../"), f"{path.name}: data.{key}"
                before = (REPO / value.replace("../../", "../", 1)).resolve()  # old: repo-root relative
                assert Path(cfg["data"][key]).resolve() == before, f"{path.name}: data.{key}"


def test_the_run_records_absolute_paths(tmp_path, monkeypatch):
    import yaml

    from facemetric.train.experiment import run_experiment

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lr.txt").write_text("0: 0.01\n")
    recipe = REPO / "configs" / "digits-softmax.yaml"
    run_experiment(recipe, overrides=["train.epochs=1", "data.input_size=8", "schedule.name=file",
                                      "schedule.path=lr.txt", "train.eval_every=0"],
                   run_dir="run", progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["schedule"]["path"] == str(tmp_path / "lr.txt")
