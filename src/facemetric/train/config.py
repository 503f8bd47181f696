"""Experiment configuration: defaults <- YAML file <- ``key.sub=value`` overrides.

Sections ``data``, ``model``, ``loss``, ``sampler``, ``optimizer`` and ``schedule`` each have a
``name`` (looked up in a registry) and the component's own options beside it, e.g.
``loss: {name: center, lambda_: 0.01, alpha: 0.5}``; unknown options are reported by the
component. The ``train`` and ``eval`` sections and the top level have fixed keys, checked here.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from facemetric.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "data": {"name": "digits"},
    "model": {"name": "lenets++", "embedding_dim": 2},
    "loss": {"name": "softmax"},
    "sampler": {"name": "uniform", "batch_size": 128},
    "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 5e-4, "momentum": 0.9},
    "schedule": {"name": "cosine", "warmup_epochs": 0.0},
    "train": {
        "epochs": 10,
        "grad_clip": 0.0,
        "ema_decay": 0.0,
        "eval_every": 0,
        "device": "auto",
        "num_workers": 0,
        "keep_checkpoints": 2,
        "deterministic": True,
        "log_every": 10,
        "head_init": "auto",
    },
    "eval": {"distance": "squared_l2", "far_target": 1e-3, "batch_size": 256},
}

_FIXED_SECTIONS = ("train", "eval")
#: options of a named section that survive a change of its ``name`` (they mean the same thing
#: for every component); all other options belong to the old component and are dropped
_GENERIC_KEYS = {
    "optimizer": ("lr", "weight_decay"),
    "schedule": ("warmup_epochs",),
    "model": ("embedding_dim",),
}
_NAMED_SECTIONS = ("data", "model", "loss", "sampler", "optimizer", "schedule")


def _merge(base: dict[str, Any], update: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if key in _NAMED_SECTIONS and "name" in value and value["name"] != out[key].get("name"):
                # a different component: its options replace the old component's
                out[key] = {**_generic(key, out[key]), **copy.deepcopy(value)}
            else:
                out[key] = _merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _generic(section: str, values: dict[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in _GENERIC_KEYS.get(section, ()) if k in values}


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"loss.lambda_=0.1"`` -> (["loss", "lambda_"], 0.1); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: the value is not valid YAML") from None
    return parts, value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    for text in overrides:
        parts, value = parse_override(text)
        if (
            len(parts) == 2 and parts[0] in _NAMED_SECTIONS and parts[1] == "name"
            and isinstance(out.get(parts[0]), dict) and out[parts[0]].get("name") != value
        ):
            out[parts[0]] = _generic(parts[0], out[parts[0]])  # a new component: drop old options
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    allowed_top = set(DEFAULTS)
    for key in config:
        if key not in allowed_top:
            raise ConfigError(f"{source}: unknown key {key!r}; expected one of {sorted(allowed_top)}")
    for section in _FIXED_SECTIONS:
        for key in config[section]:
            if key not in DEFAULTS[section]:
                raise ConfigError(
                    f"{source}: unknown key '{section}.{key}'; expected one of {sorted(DEFAULTS[section])}"
                )
    for section in _NAMED_SECTIONS:
        if not isinstance(config.get(section), dict) or not config[section].get("name"):
            raise ConfigError(f"{source}: '{section}.name' is required")
    epochs = config["train"]["epochs"]
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"{source}: 'train.epochs' must be a positive integer, got {epochs!r}")
    return config


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Resolve defaults, the YAML file at ``path`` (if any) and ``overrides`` into one dict."""
    config = copy.deepcopy(DEFAULTS)
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        config = _merge(config, loaded, "")
    config = apply_overrides(config, overrides or [])
    return validate(config, source)


def options(section: dict[str, Any], *exclude: str) -> dict[str, Any]:
    """A named section's options: everything except ``name`` (and ``exclude``)."""
    return {k: v for k, v in section.items() if k != "name" and k not in exclude}
