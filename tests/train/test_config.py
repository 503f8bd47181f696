"""Config resolution: defaults <- YAML <- overrides, and one-line errors for bad fields."""

from pathlib import Path

import pytest

from facemetric.errors import ConfigError
from facemetric.train.config import load_config, parse_override

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
    for path in recipes:
        cfg = load_config(path)
        assert cfg["name"] == path.stem


def test_digits_recipes_match_the_demo_variants():
    from facemetric.demo import DEMO_VARIANTS, EXTRA_VARIANTS, demo_config
    from facemetric.train.config import DEFAULTS, _merge, validate

    for name, _, _ in DEMO_VARIANTS + EXTRA_VARIANTS:
        cfg = load_config(REPO / "configs" / f"digits-{name}.yaml")
        want = validate(_merge(DEFAULTS, demo_config(name), ""))
        cfg["train"]["eval_every"] = want["train"]["eval_every"]
        assert cfg == want, name
