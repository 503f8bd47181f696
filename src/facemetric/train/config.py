"""Experiment configuration: defaults <- YAML file <- ``key.sub=value`` overrides.

Sections ``data``, ``model``, ``loss``, ``sampler``, ``optimizer`` and ``schedule`` each have a
``name`` (looked up in a registry) and the component's own options beside it, e.g.
``loss: {name: center, lambda_: 0.01, alpha: 0.5}``. The top level, the ``train`` and ``eval``
sections and the generic keys of the named sections (``optimizer.lr``/``weight_decay``,
``schedule.warmup_epochs``, ``model.embedding_dim``) are checked here against a typed schema
(:data:`SCHEMA`); a component checks its own options when it is built, and
:func:`component_errors` turns a TypeError/ValueError it raises into a one-line
``section.key: expected ..., got ...``.

Speed and scale switches of the ``train`` section: ``precision`` (``fp32``, ``bf16``, ``fp16``:
the backbone runs under autocast, the loss/head in float32; ``fp16`` needs CUDA and uses a
gradient scaler), ``channels_last`` (NHWC memory format), ``compile`` (``torch.compile`` of the
backbone) and ``sync_batchnorm`` (batch statistics over all processes of a torchrun launch).

Paths (:data:`PATH_KEYS`: ``data.root``, ``data.val_pairs``, ``data.cache_dir``,
``schedule.path``, a ``model.pretrained`` artifact folder, ...) written in a recipe are relative
to the recipe file's folder, not to the working directory; paths given as overrides or in a
dict config are relative to the working directory. The resolved config holds absolute paths
(that is what a run's ``config.yaml`` records), and a missing one is
``data.root: /abs/path does not exist``.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from facemetric.distances import DISTANCES
from facemetric.errors import ConfigError, FacemetricError

DEFAULTS: dict[str, Any] = {
    "task": "embedding",
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
        "precision": "fp32",
        "channels_last": False,
        "compile": False,
        "sync_batchnorm": False,
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


# ------------------------------------------------------------------------------- schema
def _where(source: str) -> str:
    return "" if source == "config" else f" (in {source})"


def _fail(key: str, expected: str, value: Any, source: str) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {value!r}{_where(source)}")


def _integer(key: str, value: Any, source: str, lo: int) -> int:
    """An int (or an integral float such as ``2.0``) >= ``lo``; bools are not integers."""
    expected = "a positive integer" if lo == 1 else f"an integer >= {lo}"
    if isinstance(value, bool):
        raise _fail(key, expected, value, source)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < lo:
        raise _fail(key, expected, value, source)
    return value


def _real(key: str, value: Any, source: str, lo: float = 0.0, hi: float | None = None,
          lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite number in the interval; strings YAML 1.1 leaves unparsed (``1e-3``) count."""
    lo_s = "(" if lo_open else "["
    hi_s = "inf)" if hi is None else (f"{hi:g})" if hi_open else f"{hi:g}]")
    expected = f"a number in {lo_s}{lo:g}, {hi_s}"
    if isinstance(value, bool) or value is None:
        raise _fail(key, expected, value, source)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _fail(key, expected, value, source) from None
    if (not math.isfinite(x) or x < lo or (lo_open and x == lo)
            or (hi is not None and (x > hi or (hi_open and x == hi)))):
        raise _fail(key, expected, value, source)
    return x


def _boolean(key: str, value: Any, source: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value, source)
    return value


def _text(key: str, value: Any, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, "a non-empty string", value, source)
    return value


def _choice(*choices: str) -> Callable[[str, Any, str], str]:
    def check(key: str, value: Any, source: str) -> str:
        if value not in choices:
            raise _fail(key, "one of " + ", ".join(repr(c) for c in choices), value, source)
        return value
    return check


def _int(lo: int) -> Callable[[str, Any, str], int]:
    return lambda key, value, source: _integer(key, value, source, lo)


def _num(lo: float = 0.0, hi: float | None = None, lo_open: bool = False,
         hi_open: bool = False) -> Callable[[str, Any, str], float]:
    return lambda key, value, source: _real(key, value, source, lo, hi, lo_open, hi_open)


#: the typed schema: (section or None for the top level, key) -> check returning the value
#: as it is stored in the resolved config. The fixed sections are checked completely; of the
#: named sections only the generic keys (the component checks its own options when built).
SCHEMA: dict[tuple[str | None, str], Callable[[str, Any, str], Any]] = {
    (None, "task"): _choice("embedding"),
    (None, "name"): _text,
    (None, "seed"): _int(0),
    ("train", "epochs"): _int(1),
    ("train", "grad_clip"): _num(0.0),
    ("train", "ema_decay"): _num(0.0, 1.0, hi_open=True),
    ("train", "eval_every"): _int(0),
    ("train", "device"): _text,
    ("train", "num_workers"): _int(0),
    ("train", "keep_checkpoints"): _int(0),
    ("train", "deterministic"): _boolean,
    ("train", "log_every"): _int(1),
    ("train", "head_init"): _choice("auto", "random", "class_means"),
    ("train", "precision"): _choice("fp32", "bf16", "fp16"),
    ("train", "channels_last"): _boolean,
    ("train", "compile"): _boolean,
    ("train", "sync_batchnorm"): _boolean,
    ("eval", "distance"): _choice(*DISTANCES),
    ("eval", "far_target"): _num(0.0, 1.0, lo_open=True, hi_open=True),
    ("eval", "batch_size"): _int(1),
    ("optimizer", "lr"): _num(0.0, lo_open=True),
    ("optimizer", "weight_decay"): _num(0.0),
    ("schedule", "warmup_epochs"): _num(0.0),
    ("model", "embedding_dim"): _int(1),
}

#: options that name files or folders: resolved against the recipe file's folder (overrides
#: and dict configs: against the working directory). ``True``: must exist when loaded.
PATH_KEYS: dict[tuple[str, str], bool] = {
    ("data", "root"): True,
    ("data", "people"): True,
    ("data", "val_pairs"): True,
    ("data", "val_root"): True,
    ("data", "val_people"): True,
    ("data", "cache_dir"): False,
    ("schedule", "path"): True,
    ("model", "pretrained"): True,
}


def _looks_like_path(section: str, key: str, value: str) -> bool:
    """``model.pretrained`` is a path only when written like one (else a model name)."""
    if (section, key) != ("model", "pretrained"):
        return True
    return os.sep in value or "/" in value or value.startswith(("~", ".", "$"))


def resolve_paths(
    config: dict[str, Any], base: str | os.PathLike, keys: Iterable[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """Make the path options ``keys`` (default :data:`PATH_KEYS`; the other task runners pass
    their own) of ``config`` absolute: ``~`` and ``$VARS`` expanded, then joined to ``base``
    (and normalised, symlinks kept). Lists (``data.people: [a, b]``), empty values and non-path
    values (``model.pretrained: dlib-resnet-v1``) are left alone. Returns a copy."""
    out = copy.deepcopy(config)
    for (section, key) in (PATH_KEYS if keys is None else keys):
        node = out.get(section)
        if not isinstance(node, dict) or not isinstance(node.get(key), str) or not node[key].strip():
            continue
        value = node[key]
        if not _looks_like_path(section, key, value):
            continue
        expanded = os.path.expanduser(os.path.expandvars(value))
        node[key] = os.path.normpath(os.path.join(os.path.abspath(base), expanded))
    return out


def check_paths(config: dict[str, Any], source: str = "config") -> None:
    """A one-line ConfigError naming the key of the first required path that does not exist."""
    for (section, key), required in PATH_KEYS.items():
        node = config.get(section)
        if not required or not isinstance(node, dict):
            continue
        value = node.get(key)
        if not isinstance(value, str) or not value or not _looks_like_path(section, key, value):
            continue
        if not os.path.exists(value):
            raise ConfigError(f"{section}.{key}: {value} does not exist{_where(source)}")


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check keys and types against :data:`SCHEMA`; returns the config with numbers coerced
    (``lr: 1e-3`` read by YAML 1.1 as a string becomes 0.001). Every problem is a one-line
    ConfigError naming the key, what was expected and the value found."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    allowed_top = set(DEFAULTS)
    for key in config:
        if key not in allowed_top:
            raise ConfigError(f"{source}: unknown key {key!r}; expected one of {sorted(allowed_top)}")
    for section in _FIXED_SECTIONS + _NAMED_SECTIONS:
        if not isinstance(config.get(section), dict):
            raise _fail(section, "a mapping of options", config.get(section), source)
    for section in _FIXED_SECTIONS:
        for key in config[section]:
            if key not in DEFAULTS[section]:
                raise ConfigError(
                    f"{source}: unknown key '{section}.{key}'; expected one of {sorted(DEFAULTS[section])}"
                )
    for section in _NAMED_SECTIONS:
        name = config[section].get("name")
        if not name:
            raise ConfigError(f"{source}: '{section}.name' is required")
        if not isinstance(name, str):
            raise _fail(f"{section}.name", "a component name", name, source)
    if "lr" not in config["optimizer"]:
        raise ConfigError(f"optimizer.lr: is required{_where(source)}")
    for (section, key), check in SCHEMA.items():
        node = config if section is None else config[section]
        if key in node:
            full = key if section is None else f"{section}.{key}"
            node[key] = check(full, node[key], source)
    return config


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML config file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "expected a YAML config file"
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
    if loaded is None:
        # an empty (or all-comment) recipe is a mistake, not a request for the defaults
        raise ConfigError(
            f"{path}: the config file is empty; expected a YAML mapping of sections "
            "(omit --config to train with the defaults)"
        )
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got a {type(loaded).__name__}")
    return loaded


def resolve_config(config: dict[str, Any], overrides: list[str] | None = None,
                   base: str | os.PathLike | None = None, source: str = "config",
                   check: bool = True) -> dict[str, Any]:
    """Defaults <- ``config`` (its relative paths resolved against ``base``, default the
    working directory) <- ``overrides`` (paths against the working directory), validated."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    config = resolve_paths(config, base if base is not None else os.getcwd())
    merged = _merge(DEFAULTS, config, "")
    merged = apply_overrides(merged, overrides or [])
    merged = resolve_paths(merged, os.getcwd())  # the overrides' paths (the rest are absolute)
    merged = validate(merged, source)
    if check:
        check_paths(merged, source)
    return merged


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Resolve defaults, the YAML file at ``path`` (if any) and ``overrides`` into one dict.

    Relative paths in the file (``data.root``, ``data.val_pairs``, ``schedule.path``, ... see
    :data:`PATH_KEYS`) are relative to the file's folder, those in ``overrides`` to the working
    directory; the result holds absolute paths (what a run's ``config.yaml`` records). With
    ``check`` a path that must exist and does not is a ConfigError naming its key.
    """
    if path is None:
        return resolve_config({}, overrides, source="config", check=check)
    path = Path(path)
    loaded = read_yaml(path)
    return resolve_config(loaded, overrides, base=path.parent, source=str(path), check=check)


_ANNOTATION_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),),
}


def _expected_types(param: inspect.Parameter) -> tuple[tuple[type, ...], str] | None:
    """The types an option accepts, from its annotation (``float | str``) or else its default;
    None when unknown (lists, dicts, custom types: the component checks those itself)."""
    ann = param.annotation
    if isinstance(ann, str) and ann:
        parts = [a.strip() for a in ann.split("|")]
        if all(a in _ANNOTATION_TYPES for a in parts):
            types = tuple(t for a in parts for t in _ANNOTATION_TYPES[a])
            words = {"int": "an integer", "float": "a number", "bool": "true or false",
                     "str": "a string", "None": "null"}
            return types, " or ".join(words[a] for a in parts)
        return None
    default = param.default
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "an integer"
    if isinstance(default, float):
        return (int, float), "a number"
    return None


def _suspect_option(values: dict[str, Any], factory: Callable[..., Any] | None
                    ) -> tuple[str, str, Any] | None:
    """The first option of ``values`` whose type its factory does not accept:
    ``(key, expected, value)``, or None."""
    if factory is None:
        return None
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    for key, value in values.items():
        if key == "name" or key not in params:
            continue
        expected = _expected_types(params[key])
        if expected is None:
            continue
        types, words = expected
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            return key, words, value
    return None


@contextmanager
def component_errors(section: str, values: dict[str, Any],
                     factory: Callable[..., Any] | None = None) -> Iterator[None]:
    """Build a named component inside this block: a TypeError/ValueError it raises becomes a
    one-line ConfigError naming ``section.key`` (the option whose type the factory's
    signature does not accept), else ``section.name``. Errors that already name a field
    (any :class:`~facemetric.errors.FacemetricError` saying ``section.``) pass unchanged."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        message = " ".join(str(exc).split()) or exc.__class__.__name__
        if isinstance(exc, FacemetricError) and (
            f"{section}." in message or not isinstance(exc, ConfigError)
        ):
            raise
        suspect = _suspect_option(values, factory)
        if suspect is not None:
            key, words, value = suspect
            raise ConfigError(f"{section}.{key}: expected {words}, got {value!r}") from None
        if isinstance(exc, FacemetricError):
            raise
        raise ConfigError(f"{section} {values.get('name')!r}: {message}") from None


def options(section: dict[str, Any], *exclude: str) -> dict[str, Any]:
    """A named section's options: everything except ``name`` (and ``exclude``)."""
    return {k: v for k, v in section.items() if k != "name" and k not in exclude}
