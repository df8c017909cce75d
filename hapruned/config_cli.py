"""Command-line flags generated from config dataclasses, so each field is described once.

Every field carries ``metadata={"help": ...}``; optionally ``metadata={"parse": callable}`` to turn
the flag's string into the field's value. Flags default to ``None`` so that only the flags a user
gives override a preset.
"""

import argparse
import dataclasses
import re
import typing


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, skip=(), presets=None) -> None:
    """One flag per field of ``cls``; ``presets`` (name -> field values) adds each preset's value to
    the help of the fields it changes."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields")
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        defaults = [f"default: {default}"] if default is not None else []
        defaults += [f"--preset {name}: {values[field.name]}" for name, values in (presets or {}).items()
                     if field.name in values and values[field.name] != default]
        help_text = field.metadata.get("help", "") + (f" ({'; '.join(defaults)})" if defaults else "")
        hint = hints[field.name]
        if hint is bool:
            group.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        parse = field.metadata.get("parse") or (hint if hint in (int, float, str) else str)
        group.add_argument(_flag(field.name), type=parse, default=None, help=help_text, metavar=field.name.upper())


def dataclass_from_args(base, args: argparse.Namespace, skip=()):
    """Return ``base`` with every field the user gave on the command line replaced (validated by the class)."""
    changes = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(base)
        if field.name not in skip and field.init and getattr(args, field.name, None) is not None
    }
    return dataclasses.replace(base, **changes)


def flag_names(message: str, *classes) -> str:
    """``message`` with every ``Cls.field`` of the given dataclasses written as the flag ``--field``."""
    for cls in classes:
        names = {field.name for field in dataclasses.fields(cls)}
        message = re.sub(rf"\b{cls.__name__}\.(\w+)",
                         lambda m: _flag(m.group(1)) if m.group(1) in names else m.group(0), message)
    return message
