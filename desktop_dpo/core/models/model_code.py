"""Code shipped with a model: :func:`find_model_code` / :func:`refuse_model_code` find what in a folder names
code of its own to run (an ``auto_map`` in any JSON file, a ``.py`` file a config points to). Such a folder is
refused at registration and again before a conversion: desktop-dpo never runs code that comes with a model.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.errors import ModelCodeRefused, ModelError
from desktop_dpo.core.models.formats import WHOLE_FILE_LIMIT, file_size, supported_list

if TYPE_CHECKING:
    pass

# --------------------------------------------------------------------------------------------------------
# Code shipped with a model
# --------------------------------------------------------------------------------------------------------

# JSON keys that make transformers import a module of the model's own: ``auto_map`` ("AutoTokenizer" ->
# "tokenization_x.XTokenizer", in config.json, tokenizer_config.json, processor_config.json ...) and a custom
# pipeline's ``custom_pipelines``. Looked for at any depth of any JSON file (text_config, llm_config ...),
# because the converter and transformers read more files, and more nesting, than this module does.
_CODE_KEYS = frozenset({"auto_map", "custom_pipelines"})
# A whole string that names a Python module ("tokenization_x.py") or a class in one ("tokenization_x.XTok").
_CODE_REFERENCE = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.(py|[A-Za-z_]\w*)$")
# Subfolders of a model folder that are searched too (transformers loads from one when asked for it).
_CODE_SEARCH_DEPTH = 3


def find_model_code(folder: str | Path) -> list[str]:
    """Everything in an HF model folder that names code of its own to run, each as a phrase for a message.

    Searches every JSON file of the folder and its subfolders, whatever its name, at any nesting depth, for an
    ``auto_map`` or ``custom_pipelines`` (what transformers imports a model's module for), and every string
    that names a ``.py`` file of the folder or a class in one (``"tokenization_x.XTokenizer"``). A ``.py``
    file that nothing points to is harmless: no loader imports it. Reads JSON only; nothing is imported.

    Returns:
        e.g. ``["its tokenizer_config.json has an auto_map (AutoTokenizer: tokenization_x.XTokenizer)"]``;
        an empty list when the folder names no code.

    Raises:
        ModelError: a JSON file is too large to check (no model's settings file is).
    """
    folder = Path(folder)
    found: list[str] = []
    modules = _python_modules(folder)
    for file in _json_files(folder):
        shown = file.relative_to(folder).as_posix()
        size = file_size(file)
        if size > WHOLE_FILE_LIMIT:
            raise ModelError(
                f"{folder.name} cannot be checked for code to run: {shown} is {size / 1e6:.0f} MB, larger "
                "than any model's settings file. Remove it if the model does not need it, or choose another "
                "copy of the model."
            )
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            # transformers parses with the same json module, so it cannot read a code reference here either.
            continue
        found.extend(f"its {shown} {what}" for what in _code_in_json(data, modules))
    return found


def refuse_model_code(folder: str | Path) -> None:
    """Refuse an HF model folder that names code of its own to run (see :func:`find_model_code`).

    Called at registration and again just before a conversion, since a folder may have changed since it was
    registered.

    Raises:
        ModelCodeRefused: the message says what was found, in which file, and that the app never runs code
            from model folders.
    """
    folder = Path(folder)
    found = find_model_code(folder)
    if found:
        more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
        raise model_code_refusal(folder, "; ".join(found[:3]) + more)


def model_code_refusal(folder: str | Path, found: str) -> ModelCodeRefused:
    """The error for a model folder that names code to run; ``found`` says what and where, as a phrase."""
    return ModelCodeRefused(
        f"{Path(folder).name} needs custom code from its authors to load: {found}. desktop-dpo never runs "
        "code from model folders, so it does not use this one, and nothing of that code ran. Choose a "
        "version of the model that loads without custom code, or a model of a supported architecture: "
        f"{supported_list()}."
    )


def _json_files(folder: Path) -> list[Path]:
    """The JSON files of ``folder`` and its subfolders (``_CODE_SEARCH_DEPTH`` deep), symlinked files too
    (a hub-cache snapshot is all symlinks); symlinked folders are not followed, so a loop cannot trap it."""
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        depth = len(Path(root).relative_to(folder).parts)
        if depth >= _CODE_SEARCH_DEPTH:
            dirs.clear()
        files.extend(Path(root) / name for name in names if name.lower().endswith(".json"))
    return sorted(file for file in files if file.is_file())


def _python_modules(folder: Path) -> set[str]:
    """Dotted module names of the folder's ``.py`` files ("tokenization_x", "sub.module")."""
    modules: set[str] = set()
    for root, dirs, names in os.walk(folder):
        relative = Path(root).relative_to(folder).parts
        if len(relative) >= _CODE_SEARCH_DEPTH:
            dirs.clear()
        for name in names:
            if name.endswith(".py"):
                modules.add(".".join((*relative, name[:-3])))
    return modules


def _code_in_json(data: Any, modules: set[str]) -> Iterator[str]:
    """Phrases for each code reference in one parsed JSON document, found without recursion (a document
    nested thousands deep must not crash the check)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                # A vocabulary may hold a token spelled "auto_map" (its value an id): only the shapes transformers
                # reads a module name from count.
                if key in _CODE_KEYS and item and isinstance(item, (dict, list, str)):
                    under = f" under {'.'.join(where)}" if where else ""
                    yield f"has {_article(key)} {key}{under} ({_first_reference(item)})"
                else:
                    stack.append((item, (*where, str(key))))
        elif isinstance(value, list):
            stack.extend((item, where) for item in value)
        elif isinstance(value, str) and modules:
            reference = _CODE_REFERENCE.match(value)
            if reference and reference[1] in modules:
                key = where[-1] if where else "a value"
                yield f"points to {reference[1].replace('.', '/')}.py ({key}: {value})"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _first_reference(value: Any) -> str:
    """The first class a code mapping names, for the message ("AutoTokenizer: tokenization_x.XTokenizer")."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list):  # (slow, fast) tokenizer classes; either may be null
                item = next((i for i in item if isinstance(i, str) and i), None)
            if isinstance(item, str):
                return f"{key}: {item}"
    if isinstance(value, list):  # the old tokenizer form: ["tokenization_x.XTokenizer", null]
        value = next((i for i in value if isinstance(i, str) and i), value)
    return value if isinstance(value, str) else json.dumps(value)[:80]
