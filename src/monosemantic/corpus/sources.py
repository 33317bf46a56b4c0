"""Text sources: every `[data].text` value becomes a stream of documents (strings).

`data.text` may be
  "storyworld"              the built-in generator (seed = data.seed, 0 when unset), endless;
  a .txt file               one document per paragraph (blank-line separated; a file without
                            blank lines is thus one document: put one per paragraph, not per line);
  a .jsonl file             one JSON object per line, text in `data.text_column`;
  a .parquet file           text in `data.text_column`, read in record batches (pyarrow);
  a folder                  every .txt/.jsonl/.parquet file below it, in sorted path order;
  "hf:<name>" or a name     a Hugging Face dataset, streamed with `datasets.load_dataset(name,
                            data.dataset_config, split=data.split, streaming=True)`; "hf:" forces
                            this for names that are also local folders.
Empty (whitespace-only) documents are skipped everywhere. Chat data (`data.format = "chat"`) comes
from the same .jsonl/.parquet files, folders and datasets, one conversation per record in
`data.messages_column` (`iter_conversations`; `chat.py` renders them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from monosemantic.config.data import DataConfig
from monosemantic.utils.errors import DataError

from .storyworld import Story, generate_stories

SUFFIXES = (".txt", ".jsonl", ".parquet")
_PATHLIKE_SUFFIXES = SUFFIXES + (".json", ".csv", ".gz", ".text", ".md")


def is_storyworld(data_cfg: DataConfig) -> bool:
    return data_cfg.text.strip().lower() == "storyworld"


def storyworld_seed(data_cfg: DataConfig) -> int:
    return 0 if data_cfg.seed is None else int(data_cfg.seed)


def iter_stories(data_cfg: DataConfig, start: int = 0) -> Iterator[Story]:
    """Storyworld stories (with concept spans), from story `start` on."""
    return generate_stories(storyworld_seed(data_cfg), None, start)


def iter_texts(data_cfg: DataConfig) -> Iterator[str]:
    """The documents of `data.text`, in a fixed order (see the module docstring for the forms)."""
    if is_storyworld(data_cfg):
        return (s.text for s in iter_stories(data_cfg))
    return _iter_records(data_cfg, data_cfg.text_column, _text)


def iter_conversations(data_cfg: DataConfig) -> Iterator[list[dict[str, str]]]:
    """The conversations of chat data (`data.format = "chat"`): each record's `data.messages_column`,
    a list of {role, content}; from the same files, folders and datasets as text."""
    from .chat import check_messages

    if is_storyworld(data_cfg):
        raise DataError("data.format = 'chat' needs conversations; storyworld is plain text (set data.text)")
    return _iter_records(data_cfg, data_cfg.messages_column, check_messages)


# A record's value checker: the value to yield, or None to skip it (empty text).
Check = Callable[[Any, str], Any]


def _text(value: Any, where: str) -> str | None:
    if not isinstance(value, str):
        raise DataError(f"{where}: the field is {type(value).__name__}, not text; set data.text_column")
    return value if value.strip() else None


def _iter_records(data_cfg: DataConfig, column: str, check: Check) -> Iterator[Any]:
    text = data_cfg.text.strip()
    if text.startswith("hf:"):
        return _iter_hf(text[3:], data_cfg, column, check)
    path = Path(text).expanduser()
    if path.is_dir():
        return _iter_folder(path, column, check)
    if path.is_file():
        return _iter_file(path, column, check)
    if _looks_like_path(text):
        raise DataError(
            f"data.text: {text!r} does not exist; give an existing .txt/.jsonl/.parquet file or folder, "
            "'storyworld', or a Hugging Face dataset name"
        )
    return _iter_hf(text, data_cfg, column, check)


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\")) or text.lower().endswith(_PATHLIKE_SUFFIXES)


def _iter_folder(folder: Path, column: str, check: Check) -> Iterator[Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise DataError(f"data.text: folder {str(folder)!r} holds no .txt/.jsonl/.parquet files")
    return (value for f in files for value in _iter_file(f, column, check))


def _iter_file(path: Path, column: str, check: Check) -> Iterator[Any]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if check is not _text:
            raise DataError(
                f"data.text: {str(path)!r} is plain text; chat data comes as .jsonl/.parquet records"
            )
        return _iter_txt(path)
    if suffix == ".jsonl":
        return _iter_jsonl(path, column, check)
    if suffix == ".parquet":
        return _iter_parquet(path, column, check)
    raise DataError(f"data.text: {str(path)!r} is not a .txt, .jsonl or .parquet file")


def _utf8_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 file; a binary or other-encoding file is one DataError naming it."""
    with open(path, encoding="utf-8") as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):  # noqa: B007 (reported on failure)
                yield line
        except UnicodeDecodeError as e:
            raise DataError(
                f"data.text: {str(path)!r} is not UTF-8 text (line {lineno + 1}: {e.reason}); "
                "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from None


def _iter_txt(path: Path) -> Iterator[str]:
    para: list[str] = []
    for line in _utf8_lines(path):
        if line.strip():
            para.append(line)
        elif para:
            yield "".join(para).strip()
            para = []
    if para:
        yield "".join(para).strip()


def _iter_jsonl(path: Path, column: str, check: Check) -> Iterator[Any]:
    for lineno, line in enumerate(_utf8_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one object"
            ) from None
        value = check(_column(row, column, f"{path}:{lineno}"), f"{path}:{lineno}")
        if value is not None:
            yield value


def _iter_parquet(path: Path, column: str, check: Check) -> Iterator[Any]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow.ArrowInvalid / OSError: not a parquet file, or truncated
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"data.text: {str(path)!r} is not a readable parquet file ({msg})") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise DataError(f"{path}: no column {column!r} (columns: {', '.join(names)}); {_fix(check)}")
    row = 0
    for batch in pf.iter_batches(columns=[column], batch_size=1024):
        for raw in batch.column(0).to_pylist():
            row += 1
            value = None if raw is None else check(raw, f"{path} row {row}")
            if value is not None:
                yield value


def _fix(check: Check) -> str:
    return "set data.text_column" if check is _text else "set data.messages_column"


def _column(row: Any, column: str, where: str, check: Check = _text) -> Any:
    if not isinstance(row, dict) or column not in row:
        keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        raise DataError(f"{where}: no field {column!r} (found: {keys}); {_fix(check)}")
    return row[column]


def _iter_hf(name: str, data_cfg: DataConfig, column: str, check: Check) -> Iterator[Any]:
    import datasets

    try:
        ds = datasets.load_dataset(name, data_cfg.dataset_config, split=data_cfg.split, streaming=True)
    except Exception as e:  # network, unknown name, bad config/split: all user-fixable
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"data.text: could not load Hugging Face dataset {name!r} "
            f"(config={data_cfg.dataset_config!r}, split={data_cfg.split!r}): {msg}"
        ) from None
    return _hf_records(ds, name, column, check)


def _hf_records(ds: Any, name: str, column: str, check: Check) -> Iterator[Any]:
    for i, row in enumerate(ds):
        value = check(_column(row, column, f"dataset {name!r} row {i}", check), f"dataset {name!r} row {i}")
        if value is not None:
            yield value
