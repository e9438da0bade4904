"""Preference pairs in and out as JSON Lines, in TRL's two preference formats.

So a person who outgrows one machine can train the same data with TRL on a cluster, and bring data made
elsewhere back here. One JSON object per line (TRL's "Dataset formats" guide, type "preference"):

standard::

    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}

conversational, with an explicit prompt::

    {"prompt": [{"role": "user", "content": "What color is the sky?"}],
     "chosen": [{"role": "assistant", "content": "It is blue."}],
     "rejected": [{"role": "assistant", "content": "It is green."}]}

conversational, with an implicit prompt (TRL's ``extract_prompt``: the shared leading messages are the
prompt, the last assistant message of each side is its response)::

    {"chosen": [{"role": "user", "content": "What color is the sky?"},
                {"role": "assistant", "content": "It is blue."}],
     "rejected": [{"role": "user", "content": "What color is the sky?"},
                  {"role": "assistant", "content": "It is green."}]}

Standard pairs with an implicit prompt (only ``chosen``/``rejected`` strings) are not accepted: the
split between prompt and response cannot be recovered from two strings.

Every prompt message and every chosen response must hold some text; a rejected response may be empty
(a model that answers nothing is worth rejecting).

Import is all or nothing: every line is checked first, and a file with any bad line raises
:class:`ImportFormatError` naming each bad line; otherwise all pairs are written in one transaction.
A pair that is already stored, or repeats an earlier line of the file (same prompt, chosen and rejected,
exactly), is a duplicate: skipped and counted by default, so importing a file twice does not double it;
the caller may import duplicates anyway, or be told of them before anything is written.
Export writes exactly the pairs training would use (:func:`pairs_from_comparisons`), and checks each line
with the importer's own rules, so an exported file always imports back to the same pairs. It never
replaces the database or another file the app keeps (:func:`~desktop_dpo.core.export_target.check_export_target`).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from desktop_dpo.config import AppPaths
from desktop_dpo.core.dpo.data import PreferencePair, pairs_from_comparisons
from desktop_dpo.core.errors import DesktopDpoError, DuplicatePairsFound, ImportFormatError
from desktop_dpo.core.export_target import check_export_target
from desktop_dpo.core.model_files import atomic_output
from desktop_dpo.core.store import PairKey, Store, messages_key, pair_key

FORMATS = ("standard", "conversational")
DUPLICATE_CHOICES = ("skip", "import", "ask")  # what import_preferences does with pairs already stored
DuplicateChoice = Literal["skip", "import", "ask"]
ROLES = ("system", "user", "assistant")
# Characters that some line readers (str.splitlines, JavaScript) take for line breaks. JSON allows them
# raw inside strings; written escaped, a file stays one pair per line for every reader.
_LINE_BREAKS_TO_ESCAPE = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


class PreferenceFileError(DesktopDpoError):
    """A preference file cannot be read or written (missing, a folder, unreadable, nothing in it)."""


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    path: str
    format: str  # "standard" or "conversational"
    imported: int  # pairs saved, each as a comparison with verdict "a" (a = chosen)
    comparison_ids: tuple[int, ...]  # the new comparisons, in file order
    identical_skipped: int  # pairs whose chosen equals rejected: they teach nothing and were not saved
    blank_lines: int  # empty lines, ignored
    duplicates_skipped: int = 0  # pairs already stored or repeated in the file: not saved again
    duplicates_imported: int = 0  # such pairs saved anyway, because the person asked for it


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    path: str
    format: str  # "standard" or "conversational"
    written: int  # lines (pairs) in the file
    comparisons: int  # comparisons those pairs came from (an edit gives more than one pair)
    skipped: tuple[tuple[int, str], ...]  # (comparison id, reason) for pairs this format cannot hold


@dataclass(frozen=True)
class ParsedPair:
    """One checked line of a preference file."""

    line: int  # 1-based line number in the file
    format: str  # "standard" or "conversational"
    messages: list[dict[str, str]]  # the prompt as messages (a standard prompt is one user message)
    chosen: str
    rejected: str


# --------------------------------------------------------------------------------------------------
# Checking one line (shared by import and export, so the two can never disagree)
# --------------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        list: "a list",
        dict: "an object",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _is_empty(text: str) -> bool:
    return not text.strip()


def _surrogate_problem(text: str, where: str) -> str | None:
    """A reason when ``text`` holds a lone surrogate (JSON allows ``"\\ud800"``; no text encoding does)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"{where} holds a lone surrogate escape (\\u{ord(text[exc.start]):04x} at character "
            f"{exc.start + 1}), which is half of a character: remove it or give both halves"
        )
    return None


def _check_messages(value: Any, key: str, problems: list[str]) -> list[dict[str, str]] | None:
    """Validate a list of ``{role, content}`` messages; append reasons to ``problems``.

    Every content must hold some text, except the rejected response (the last message of "rejected"):
    an empty answer is a real thing a model does and a person rejects.
    """
    if not isinstance(value, list):
        problems.append(f'"{key}" must be a list of messages, not {_type_name(value)}')
        return None
    if not value:
        problems.append(f'"{key}" is an empty list of messages')
        return None
    messages: list[dict[str, str]] = []
    ok = True
    for index, message in enumerate(value, start=1):
        where = f'"{key}" message {index}'
        if not isinstance(message, dict):
            problems.append(f"{where} must be an object with role and content, not {_type_name(message)}")
            ok = False
            continue
        missing = [k for k in ("role", "content") if k not in message]
        if missing:
            problems.append(f"{where} is missing {' and '.join(repr(k) for k in missing)}")
            ok = False
            continue
        role, content = message["role"], message["content"]
        if role not in ROLES:
            problems.append(f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
            ok = False
        if not isinstance(content, str):
            problems.append(f"{where} content must be a string, not {_type_name(content)}")
            ok = False
        elif (surrogate := _surrogate_problem(content, f"{where} content")) is not None:
            problems.append(surrogate)
            ok = False
        elif _is_empty(content) and not (key == "rejected" and index == len(value)):
            problems.append(f"{where} has empty content")
            ok = False
        if ok:
            messages.append({"role": role, "content": content})
    return messages if ok else None


def _single_response(value: list[dict[str, str]], key: str, problems: list[str]) -> str | None:
    """The text of a one-message assistant response (explicit-prompt conversational format)."""
    if len(value) != 1:
        problems.append(
            f'"{key}" must hold exactly one assistant message when "prompt" is given, not {len(value)}'
        )
        return None
    if value[0]["role"] != "assistant":
        problems.append(f'"{key}" must be an assistant message, not {value[0]["role"]!r}')
        return None
    return value[0]["content"]


def _check_prompt(messages: list[dict[str, str]], problems: list[str]) -> None:
    # The response answers the prompt's last turn; a prompt ending with an assistant turn would put two
    # assistant turns in a row, which no chat template renders as intended.
    if messages and messages[-1]["role"] != "user":
        problems.append(f"the prompt must end with a user message, not {messages[-1]['role']!r}")


def _check_standard(obj: dict[str, Any], problems: list[str]) -> tuple[list[dict[str, str]], str, str] | None:
    if "prompt" not in obj:
        problems.append(
            'missing key "prompt" (a standard pair needs the prompt as its own string; '
            "pairs whose prompt is inside chosen/rejected are not supported)"
        )
    for key in ("prompt", "chosen", "rejected"):
        if key in obj and not isinstance(obj[key], str):
            problems.append(f'"{key}" must be a string in the standard format, not {_type_name(obj[key])}')
    if problems:
        return None
    for key in ("prompt", "chosen", "rejected"):
        if (surrogate := _surrogate_problem(obj[key], f'"{key}"')) is not None:
            problems.append(surrogate)
    if problems:
        return None
    for key in ("prompt", "chosen"):  # an empty rejected response is allowed (see _check_messages)
        if _is_empty(obj[key]):
            problems.append(f'"{key}" is empty')
    if problems:
        return None
    return [{"role": "user", "content": obj["prompt"]}], obj["chosen"], obj["rejected"]


def _check_conversational(
    obj: dict[str, Any], problems: list[str]
) -> tuple[list[dict[str, str]], str, str] | None:
    chosen = _check_messages(obj["chosen"], "chosen", problems)
    rejected = _check_messages(obj["rejected"], "rejected", problems)
    if "prompt" in obj:
        prompt = _check_messages(obj["prompt"], "prompt", problems)
        if prompt is None or chosen is None or rejected is None:
            return None
        chosen_text = _single_response(chosen, "chosen", problems)
        rejected_text = _single_response(rejected, "rejected", problems)
        _check_prompt(prompt, problems)
        if problems or chosen_text is None or rejected_text is None:
            return None
        return prompt, chosen_text, rejected_text
    # Implicit prompt: everything but the last message is shared, the last is each side's response.
    if chosen is None or rejected is None:
        return None
    for key, side in (("chosen", chosen), ("rejected", rejected)):
        if len(side) < 2:
            problems.append(
                f'"{key}" needs the prompt messages followed by one assistant response (no "prompt" key given)'
            )
        elif side[-1]["role"] != "assistant":
            problems.append(
                f'the last message of "{key}" must be the assistant response, not {side[-1]["role"]!r}'
            )
    if problems:
        return None
    if chosen[:-1] != rejected[:-1]:
        problems.append('"chosen" and "rejected" must share every message but the last (the prompt)')
        return None
    _check_prompt(chosen[:-1], problems)
    if problems:
        return None
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _line_format(obj: Any) -> str | None:
    """The format by the type of ``chosen`` (else ``rejected``); None if neither tells."""
    if not isinstance(obj, dict):
        return None
    for key in ("chosen", "rejected"):
        if isinstance(obj.get(key), str):
            return "standard"
        if isinstance(obj.get(key), list):
            return "conversational"
    return None


def _check_pair(obj: Any) -> tuple[str | None, tuple[list[dict[str, str]], str, str] | None, list[str]]:
    """Check one decoded line: ``(format, (messages, chosen, rejected) or None, reasons)``."""
    problems: list[str] = []
    if not isinstance(obj, dict):
        return None, None, [f"expected a JSON object with prompt/chosen/rejected, not {_type_name(obj)}"]
    missing = [key for key in ("chosen", "rejected") if key not in obj]
    if missing:
        problems.append("missing key " + " and ".join(f'"{key}"' for key in missing))
    line_format = _line_format(obj)
    if line_format is None:
        if "chosen" in obj:
            problems.append(
                '"chosen" must be a string (standard format) or a list of messages (conversational format), '
                f"not {_type_name(obj['chosen'])}"
            )
        return None, None, problems
    if missing:
        return line_format, None, problems
    if line_format == "standard":
        pair = _check_standard(obj, problems)
    else:
        for key in ("prompt", "chosen", "rejected"):
            if key in obj and isinstance(obj[key], str):
                problems.append(f'"{key}" must be a list of messages like the rest of the line, not a string')
        pair = None if problems else _check_conversational(obj, problems)
    return line_format, (pair if not problems else None), problems


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------


# Generous caps that still bound memory: the importer keeps every checked pair in memory until the one
# transaction that saves them, so a file is held several times over as Python objects. The largest public
# preference sets (Anthropic HH, UltraFeedback) are a few hundred MiB as JSONL; one pair is rarely above a
# few MiB. Without the caps, `/dev/zero` or an endless pipe is read until the process runs out of memory.
MAX_LINE_BYTES = 64 * 1024 * 1024  # one pair (one line)
MAX_FILE_BYTES = 1024 * 1024 * 1024  # a whole file (or stream)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # also the start of UTF-32 little-endian's mark


def _size_text(size: int) -> str:
    return f"{size / (1024 * 1024 * 1024):g} GiB" if size >= 1024**3 else f"{size / (1024 * 1024):g} MiB"


def _open_preference_file(path: Path) -> BinaryIO:
    if not path.exists():
        raise PreferenceFileError(f"{path} does not exist. Check the file name and folder.")
    if path.is_dir():
        raise PreferenceFileError(
            f"{path} is a folder. Choose a .jsonl file with one preference pair per line."
        )
    try:
        handle = path.open("rb")
        size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise PreferenceFileError(f"Cannot read {path}: {exc}. Check that the file is readable.") from exc
    if size > MAX_FILE_BYTES:  # a regular file: refuse at once; a stream is counted while it is read
        handle.close()
        raise _too_large(path)
    return handle


def _too_large(path: Path) -> PreferenceFileError:
    return PreferenceFileError(
        f"{path} is larger than {_size_text(MAX_FILE_BYTES)}; nothing was imported. Split it into smaller "
        "files (one pair per line, so any line boundary will do) and import them one by one."
    )


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes without the newline)`` read one line at a time, within the size caps.

    Splits on "\n" only: str.splitlines() also breaks at U+2028, U+0085 and others, which JSON allows raw
    inside strings. A UTF-8 byte-order mark (as some Windows editors write) is dropped; a UTF-16 file is
    refused with a message, since every line of it would otherwise be reported as bad.
    """
    total = 0
    with _open_preference_file(path) as handle:
        for number in itertools.count(1):
            try:
                raw = handle.readline(MAX_LINE_BYTES + 1)
            except OSError as exc:
                raise PreferenceFileError(
                    f"Cannot read {path} (line {number}): {exc}. Check that the file is readable."
                ) from exc
            if not raw:
                return
            total += len(raw)
            if total > MAX_FILE_BYTES:
                raise _too_large(path)
            if len(raw) > MAX_LINE_BYTES:
                raise PreferenceFileError(
                    f"Line {number} of {path} is longer than {_size_text(MAX_LINE_BYTES)}; nothing was "
                    "imported. A preference file holds one JSON object per line: check that this is "
                    "the right file (a JSONL file, not a single big JSON document or a binary file)."
                )
            if number == 1:
                if raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                elif _looks_like_utf16(raw):
                    raise PreferenceFileError(
                        f"{path} is saved as UTF-16 text; desktop-dpo reads UTF-8. Open it in a text editor, "
                        'save it as UTF-8 ("Save as" > Encoding: UTF-8) and import it again.'
                    )
            yield number, raw.removesuffix(b"\n")


def _looks_like_utf16(line: bytes) -> bool:
    """A UTF-16 mark, or mostly-ASCII text with a NUL byte in every other place (UTF-16 without a mark)."""
    if line.startswith(_UTF16_BOMS):
        return True
    sample = line[:4096]
    if len(sample) < 4:
        return False
    return max(sample[0::2].count(0), sample[1::2].count(0)) >= len(sample) // 4


def _decode_json(raw: bytes) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, reason)`` when the line is not JSON this importer can take."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 text (byte {exc.start + 1} of the line)"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, "JSON nested too deeply (lists or objects inside each other thousands of levels deep)"
    except ValueError as exc:  # Python's cap on digits when it turns a long number into an int
        if "digits" in str(exc):
            return None, (
                "a number with thousands of digits; no preference pair holds one (write it as a string)"
            )
        return None, f"invalid JSON ({exc})"


def read_preference_file(path: str | Path) -> tuple[str, list[ParsedPair], int]:
    """Parse and check a whole preference file without touching any database.

    Returns ``(format, pairs, blank_lines)``. Raises :class:`ImportFormatError` listing every bad line
    (1-based numbers) and :class:`PreferenceFileError` for a missing, unreadable, empty, UTF-16 or too
    large file (over ``MAX_FILE_BYTES``, or a line over ``MAX_LINE_BYTES``).
    """
    path = Path(path)
    problems: list[tuple[int, str]] = []
    pairs: list[ParsedPair] = []
    blank = 0
    file_format: tuple[str, int] | None = None  # the format of the first line that shows one
    for number, raw in _lines(path):
        if not raw.strip(b" \t\r"):
            blank += 1
            continue
        obj, reason = _decode_json(raw)
        if reason is not None:
            problems.append((number, reason))
            continue
        line_format, pair, reasons = _check_pair(obj)
        if line_format is not None:
            if file_format is None:
                file_format = (line_format, number)
            elif line_format != file_format[0]:
                reasons.insert(
                    0,
                    f"mixed formats: this line is {line_format} but line {file_format[1]} is "
                    f"{file_format[0]}; a file must use one format",
                )
        if reasons:
            problems.append((number, "; ".join(reasons)))
        elif pair is not None and line_format is not None:
            messages, chosen, rejected = pair
            pairs.append(ParsedPair(number, line_format, messages, chosen, rejected))
    if problems:
        raise ImportFormatError(str(path), problems)
    if not pairs:
        raise PreferenceFileError(
            f"{path} holds no preference pairs. Choose a JSON Lines file with one "
            '{"prompt", "chosen", "rejected"} object per line.'
        )
    assert file_format is not None  # there is at least one pair
    return file_format[0], pairs, blank


def import_preferences(
    store: Store, path: str | Path, *, duplicates: DuplicateChoice = "skip"
) -> ImportResult:
    """Import a TRL preference JSONL file (standard or conversational) into ``store``.

    All or nothing: every line is checked before anything is written, and a file with bad lines raises
    :class:`ImportFormatError` listing each one; the pairs are then saved in one transaction. Each pair
    becomes a comparison with ``source="import"``, generation A = chosen, B = rejected, verdict "a",
    model and seed unknown. Pairs whose chosen equals rejected are skipped (they teach nothing).

    A duplicate is a pair whose prompt, chosen and rejected texts equal, exactly, a pair the store
    already gives training (a live comparison's verdict or edit) or an earlier line of the file.
    ``duplicates`` says what happens to them:

    - ``"skip"``: not saved, counted in ``ImportResult.duplicates_skipped``;
    - ``"import"``: saved like the others, counted in ``ImportResult.duplicates_imported``;
    - ``"ask"``: if there is any, nothing is saved and :class:`DuplicatePairsFound` gives their count,
      so the caller can ask the person and import again with ``"skip"`` or ``"import"``.

    The check and the writes happen in the same transaction, so a pair saved by another window meanwhile
    is still seen.
    """
    if duplicates not in DUPLICATE_CHOICES:
        raise ValueError(
            f"Unknown duplicates choice {duplicates!r}; expected one of {', '.join(DUPLICATE_CHOICES)}."
        )
    file_format, pairs, blank = read_preference_file(path)
    ids: list[int] = []
    identical = 0
    repeated = 0
    # A locked, damaged or full database becomes a message; the one transaction means nothing is half-saved.
    with store.explained_errors("nothing was imported"), store.atomic():
        seen: set[PairKey] = store.stored_pair_keys(messages_key(p.messages) for p in pairs)
        to_save: list[ParsedPair] = []
        for pair in pairs:
            if pair.chosen == pair.rejected:
                identical += 1
                continue
            key = pair_key(pair.messages, pair.chosen, pair.rejected)
            if key in seen:
                repeated += 1
                if duplicates != "import":
                    continue
            seen.add(key)
            to_save.append(pair)
        if repeated and duplicates == "ask":
            # Raised inside the transaction, which then rolls back: nothing was written anyway.
            raise DuplicatePairsFound(str(path), repeated, len(pairs) - identical)
        for pair in to_save:
            ids.append(
                store.record_pair(
                    messages=pair.messages,
                    text_a=pair.chosen,
                    text_b=pair.rejected,
                    verdict="a",
                    source="import",
                )
            )
    return ImportResult(
        path=str(path),
        format=file_format,
        imported=len(ids),
        comparison_ids=tuple(ids),
        identical_skipped=identical,
        blank_lines=blank,
        duplicates_skipped=0 if duplicates == "import" else repeated,
        duplicates_imported=repeated if duplicates == "import" else 0,
    )


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------


def pair_to_json(pair: PreferencePair, file_format: str, *, explicit_prompt: bool = True) -> dict[str, Any]:
    """One pair as a TRL preference object (``explicit_prompt`` only matters for conversational)."""
    if file_format == "standard":
        if len(pair.messages) != 1 or pair.messages[0]["role"] != "user":
            raise ValueError("the standard format holds a single user prompt")
        return {"prompt": pair.messages[0]["content"], "chosen": pair.chosen, "rejected": pair.rejected}
    if file_format != "conversational":
        raise ValueError(f"Unknown format {file_format!r}; expected one of {', '.join(FORMATS)}.")
    messages = [{"role": m["role"], "content": m["content"]} for m in pair.messages]
    chosen = {"role": "assistant", "content": pair.chosen}
    rejected = {"role": "assistant", "content": pair.rejected}
    if explicit_prompt:
        return {"prompt": messages, "chosen": [chosen], "rejected": [rejected]}
    return {"chosen": [*messages, chosen], "rejected": [*messages, rejected]}


def _json_line(obj: dict[str, Any]) -> str:
    line = json.dumps(obj, ensure_ascii=False)
    for char, escaped in _LINE_BREAKS_TO_ESCAPE.items():
        line = line.replace(char, escaped)
    return line


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 so that ``path`` holds either its old content or all of the new.

    A temporary file in the same folder is written, flushed to disk, then renamed over ``path``
    (a rename within one file system is atomic), and the folder entry is synced where the OS allows.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temp:
        temp.write_bytes(text.encode("utf-8"))


def export_preferences(
    store: Store,
    path: str | Path,
    *,
    file_format: str = "conversational",
    explicit_prompt: bool = True,
    comparison_ids: Sequence[int] | None = None,
    paths: AppPaths | None = None,
) -> ExportResult:
    """Write the usable pairs of ``store`` (or of ``comparison_ids``) as a TRL preference JSONL file.

    The pairs are exactly those training uses (:func:`pairs_from_comparisons`): verdict A or B gives
    chosen = the named response; an edit gives the edited text as chosen against the unedited original
    (and against the other response unless the verdict named it); ties, "both bad", skips and deleted
    comparisons give nothing. A pair the chosen format cannot hold (a multi-turn prompt in the standard
    format, an empty prompt or chosen text) is left out and listed in ``ExportResult.skipped``.
    The file is replaced atomically; raises :class:`PreferenceFileError` when there is nothing to write,
    and :class:`~desktop_dpo.core.errors.ProtectedFileError` when ``path`` is the database, an SQLite file
    or an existing file in the app's folders (``paths``, default :meth:`AppPaths.default`).
    """
    if file_format not in FORMATS:
        raise ValueError(f"Unknown format {file_format!r}; expected one of {', '.join(FORMATS)}.")
    path = Path(path)
    check_export_target(path, database=store.path, paths=paths)
    views = store.comparison_views(ids=comparison_ids)
    lines: list[str] = []
    skipped: list[tuple[int, str]] = []
    used: set[int] = set()
    for pair in pairs_from_comparisons(views):
        if file_format == "standard" and (len(pair.messages) != 1 or pair.messages[0]["role"] != "user"):
            skipped.append(
                (
                    pair.comparison_id,
                    f"the prompt has {len(pair.messages)} message(s) ({', '.join(m['role'] for m in pair.messages)}); "
                    "the standard format holds one user prompt: export in the conversational format to keep it",
                )
            )
            continue
        obj = pair_to_json(pair, file_format, explicit_prompt=explicit_prompt)
        # The importer's own rules: an exported file must always import back.
        _, checked, reasons = _check_pair(obj)
        if reasons or checked is None:
            skipped.append((pair.comparison_id, "; ".join(reasons)))
            continue
        lines.append(_json_line(obj))
        used.add(pair.comparison_id)
    if not lines:
        detail = f" ({len(skipped)} pair(s) cannot be written in the {file_format} format)" if skipped else ""
        raise PreferenceFileError(
            f"There are no usable pairs to export{detail}. Pick A or B (or edit a response) on some "
            "comparisons first."
        )
    try:
        write_text_atomically(path, "".join(line + "\n" for line in lines))
    except OSError as exc:
        raise PreferenceFileError(f"Cannot write {path}: {exc}. Choose a folder you can write to.") from exc
    return ExportResult(
        path=str(path), format=file_format, written=len(lines), comparisons=len(used), skipped=tuple(skipped)
    )
