"""One configuration system: dataclass trees, typed ``--set key=value`` overrides, did-you-mean errors.

Every configurable part of the library (training :mod:`awm_lib.train.config`,
pretraining :mod:`awm_lib.pretrain.config`, the benchmark and the ablation
study) is a dataclass (or a tree of them) with named presets, and is changed
from the command line the same way::

    cfg = apply_overrides(cfg, ["optim.lr_head=3e-4", "model.pooling=attention"])

Each value is parsed and checked against the field's type annotation (``bool``,
``int``, ``float``, ``str``, ``Literal``, ``X | None``, tuples, lists, nested
dataclasses), so a typo fails loudly instead of being silently misread:
``bf16=ture`` is :class:`awm_lib.errors.ConfigError` ``bf16='ture': expected
true or false; did you mean true?``, and an unknown key names the closest ones.

A preset is a function of no arguments that returns a fresh config; a family of
them is a ``{name: function}`` dict, and :func:`preset_from` picks one by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import operator
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from awm_lib.errors import ConfigError

C = TypeVar("C")

_BOOLS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp) -> tuple[bool, Any]:
    """``X | None`` -> (True, X)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else functools.reduce(operator.or_, args)
    return False, tp


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def did_you_mean(word: str, choices) -> str:
    """``"; did you mean x, y?"`` with the closest of ``choices``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def check_value(value: Any, tp, key: str) -> Any:
    """Return ``value`` coerced to ``tp`` (int -> float, list -> tuple), or raise ConfigError."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{key} cannot be None (expected {_type_name(tp)})")
    tp = inner
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not one of {list(args)}{did_you_mean(value, args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value, prefix=key + ".")
        raise ConfigError(f"{key} must be a mapping of {tp.__name__} fields, got {type(value).__name__}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} entries, got {len(value)}")
            items = [check_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            elem = args[0] if args else Any
            items = [check_value(v, elem, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: cannot check a value of type {_type_name(tp)}")


def parse_text(text: str, tp, key: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` for a field of type ``tp``."""
    optional, inner = _is_optional(tp)
    low = text.strip().lower()
    if optional and low in ("none", "null"):
        return None
    origin = typing.get_origin(inner)
    if inner is bool:
        if low not in _BOOLS:
            raise ConfigError(f"{key}={text!r}: expected true or false{did_you_mean(low, ('true', 'false'))}")
        return _BOOLS[low]
    if inner is str or (origin is Literal and all(isinstance(a, str) for a in typing.get_args(inner))):
        return check_value(text, tp, key)
    if (
        inner in (int, float)
        or origin in (tuple, list, dict)
        or dataclasses.is_dataclass(inner)
        or origin is Literal
    ):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            if origin in (tuple, list):  # allow "a,b,c" for lists
                value = [json.loads(v) if _is_json(v) else v for v in text.split(",")]
            else:
                raise ConfigError(f"{key}={text!r}: expected {_type_name(inner)}") from None
        if inner is int and isinstance(value, float) and value.is_integer() and "e" in low:
            value = int(value)  # allow 1e3 for integers
        return check_value(value, tp, key)
    return check_value(text, tp, key)


def _is_json(s: str) -> bool:
    try:
        json.loads(s)
    except json.JSONDecodeError:
        return False
    return True


def to_dict(cfg) -> dict:
    """A dataclass tree as plain JSON-ready dicts (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls, d: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a (nested) dict, checking every key and type."""
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or cls.__name__} must be a mapping")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(d) - names
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(unknown_key_message(prefix + k, [prefix + n for n in names]))
    kwargs = {k: check_value(v, hints[k], prefix + k) for k, v in d.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from e


def unknown_key_message(key: str, choices: list[str]) -> str:
    """``unknown configuration key 'lrr'; did you mean lr?`` (or the valid keys when none is close)."""
    hint = did_you_mean(key, choices) or f"; valid keys here: {', '.join(sorted(choices))}"
    return f"unknown configuration key {key!r}{hint}"


def set_value(cfg, key: str, text: str, _prefix: str = ""):
    """A copy of ``cfg`` with the dotted ``key`` set from the string ``text`` (type-checked)."""
    head, _, rest = key.partition(".")
    full = _prefix + head
    names = [f.name for f in dataclasses.fields(cfg)]
    if head not in names:
        raise ConfigError(unknown_key_message(_prefix + key, [_prefix + n for n in names]))
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{full!r} is a value, not a section: cannot set {_prefix + key!r}")
        new = set_value(current, rest, text, _prefix=full + ".")
    else:
        if dataclasses.is_dataclass(current):
            leaf = next(
                f.name
                for f in dataclasses.fields(current)
                if not dataclasses.is_dataclass(getattr(current, f.name))
            )
            raise ConfigError(f"{full!r} is a section; set one of its keys, e.g. {full}.{leaf}=...")
        new = parse_text(text, _hints(type(cfg))[head], full)
    try:
        return dataclasses.replace(cfg, **{head: new})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{full}={text!r}: {e}") from e


def apply_overrides(cfg, overrides: list[str] | tuple[str, ...] | None):
    """Apply ``["a.b=1", ...]`` in order; each must be ``key=value``."""
    for item in overrides or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr_head=1e-4)")
        cfg = set_value(cfg, key.strip(), text)
    return cfg


def preset_from(presets: Mapping[str, Callable[[], C]], name: str) -> C:
    """A fresh config from the preset function ``presets[name]``; an unknown name is a ConfigError."""
    if name not in presets:
        raise ConfigError(
            f"unknown preset {name!r}; choose one of {', '.join(presets)}{did_you_mean(name, presets)}"
        )
    return presets[name]()
