"""Write docs/api.md from the docstrings and help texts: `python docs/gen_api.py`.

tests/test_docs.py regenerates the page and fails when the committed one differs, so the API reference cannot
drift from the code, and fails when a public function, class or argument has no documentation.
"""

import dataclasses
import inspect
import os
import types
import typing

from transformers import TrainingArguments

import lets_hf

HEADER = """# API reference

Generated from the docstrings by `python docs/gen_api.py`; `tests/test_docs.py` fails when this page is out of
date or a public name is undocumented. Everything below is importable from `lets_hf`.
"""


def signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def type_name(hint) -> str:
    """``float``, ``float or None``: from the resolved hint, whatever HfArgumentParser did to the fields."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        return " or ".join(type_name(a) for a in args if a is not type(None)) + " or None"
    return getattr(hint, "__name__", str(hint))


def arguments_table() -> str:
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    hints = typing.get_type_hints(lets_hf.LETSTrainingArguments)
    rows = ["| argument | type | default | help |", "|---|---|---|---|"]
    for f in dataclasses.fields(lets_hf.LETSTrainingArguments):
        if f.name in base:
            continue
        rows.append(f"| `{f.name}` | {type_name(hints[f.name])} | `{f.default}` | {f.metadata['help']} |")
    return "\n".join(rows)


def section(name: str) -> str:
    obj = getattr(lets_hf, name)
    doc = inspect.getdoc(obj)
    if not doc:
        raise ValueError(f"lets_hf.{name} has no docstring")
    kind = "class" if inspect.isclass(obj) else "function"
    sig = signature(obj) if kind == "function" else ""
    text = f"## `{name}`\n\n{kind} `lets_hf.{name}{sig}`\n\n```text\n{doc}\n```\n"
    if obj is lets_hf.LETSTrainingArguments:
        text += "\nArguments added to `TrainingArguments` (each is also a `--flag` of `lets-glue`):\n\n"
        text += arguments_table() + "\n"
    if obj is lets_hf.LETSTrainer:
        text += f"\n`LETSTrainer{signature(obj.__init__).replace('(self, ', '(')}`\n"
    return text


def render() -> str:
    order = ["LETSTrainer", "LETSTrainingArguments"] + sorted(
        n for n in lets_hf.__all__ if n not in ("LETSTrainer", "LETSTrainingArguments")
    )
    return HEADER + "\n" + "\n".join(section(n) for n in order)


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "api.md")
    with open(path, "w") as f:
        f.write(render())
