"""What every ``hope`` command parses the same way: argparse value types (each refuses bad input with a
message that names what it accepts) and the dotted options that override config fields."""

import argparse
import json
from typing import Any

PROG = "hope"


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def integer(text: str) -> int:
    try:
        # Accept 1e6 / 1_000_000 for token counts; refuse 2.5.
        value = float(text.replace("_", "")) if any(c in text for c in "eE") else int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value != int(value):
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}")
    return int(value)


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


_SHARED = {
    "run": {"required": True, "help": "run directory (e.g. runs/latest)"},
    "precision": {"choices": ("fp32", "bf16"), "default": "fp32", "help": "(default: fp32)"},
    "device": {"choices": ("auto", "cpu", "cuda"), "default": "auto", "help": "(default: auto)"},
}


def add_shared(parser: argparse.ArgumentParser, *names: str) -> None:
    """Adds the options several commands share, by name: ``run``, ``precision``, ``device``."""
    for name in names:
        parser.add_argument(f"--{name}", **_SHARED[name])


def int_list(minimum: int):
    """A comma-separated list of integers >= ``minimum`` (0 or 1), as a tuple."""
    item, what = (positive_int, "positive integers") if minimum == 1 else (non_negative_int, "integers >= 0")

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(item(part) for part in text.split(",") if part.strip())
        except argparse.ArgumentTypeError:
            values = ()
        if not values:
            raise argparse.ArgumentTypeError(f"must be a comma-separated list of {what}, got {text!r}")
        return values

    return parse


def name_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of at least one name, as a tuple."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one item, got {text!r}")
    return names


def dotted_options(parser: argparse.ArgumentParser, extra: list[str]) -> dict[str, Any]:
    """The ``--section.field VALUE`` (or ``--section.field=VALUE``) options among the arguments argparse
    did not know, as ``{"section.field": value}``; ``model.`` is dropped (``--model.d_model`` sets
    ``d_model``). Anything else is an error naming the argument."""
    overrides, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if "." not in key:
            parser.error(
                f"unrecognized argument {arg!r} (config fields take a dotted name: --model.d_model 64, "
                "--titans.chunk_size 16)"
            )
        if not eq:
            if i + 1 >= len(extra):
                parser.error(f"{arg} needs a value")
            i += 1
            value = extra[i]
        overrides[key.removeprefix("model.")] = parse_value(value)
        i += 1
    return overrides


def parse_value(text: str) -> Any:
    """JSON where it parses (16, 0.5, true, [16, 64]), a comma list of those (16,64), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(part) for part in text.split(",") if part]
    return text
