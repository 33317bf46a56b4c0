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
Empty (whitespace-only) documents are skipped everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    text = data_cfg.text.strip()
    if is_storyworld(data_cfg):
        return (s.text for s in iter_stories(data_cfg))
    if text.startswith("hf:"):
        return _iter_hf(text[3:], data_cfg)
    path = Path(text).expanduser()
    if path.is_dir():
        return _iter_folder(path, data_cfg.text_column)
    if path.is_file():
        return _iter_file(path, data_cfg.text_column)
    if _looks_like_path(text):
        raise DataError(
            f"data.text: {text!r} does not exist; give an existing .txt/.jsonl/.parquet file or folder, "
            "'storyworld', or a Hugging Face dataset name"
        )
    return _iter_hf(text, data_cfg)


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\")) or text.lower().endswith(_PATHLIKE_SUFFIXES)


def _iter_folder(folder: Path, column: str) -> Iterator[str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise DataError(f"data.text: folder {str(folder)!r} holds no .txt/.jsonl/.parquet files")
    return (text for f in files for text in _iter_file(f, column))


def _iter_file(path: Path, column: str) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _iter_txt(path)
    if suffix == ".jsonl":
        return _iter_jsonl(path, column)
    if suffix == ".parquet":
        return _iter_parquet(path, column)
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


def _iter_jsonl(path: Path, column: str) -> Iterator[str]:
    for lineno, line in enumerate(_utf8_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one object"
            ) from None
        text = _column(row, column, f"{path}:{lineno}")
        if text.strip():
            yield text


def _iter_parquet(path: Path, column: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow.ArrowInvalid / OSError: not a parquet file, or truncated
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"data.text: {str(path)!r} is not a readable parquet file ({msg})") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise DataError(f"{path}: no column {column!r} (columns: {', '.join(names)}); set data.text_column")
    for batch in pf.iter_batches(columns=[column], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text and text.strip():
                yield text


def _column(row: Any, column: str, where: str) -> str:
    if not isinstance(row, dict) or column not in row:
        keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        raise DataError(f"{where}: no field {column!r} (found: {keys}); set data.text_column")
    value = row[column]
    if not isinstance(value, str):
        raise DataError(
            f"{where}: field {column!r} is {type(value).__name__}, not text; set data.text_column"
        )
    return value


def _iter_hf(name: str, data_cfg: DataConfig) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(name, data_cfg.dataset_config, split=data_cfg.split, streaming=True)
    except Exception as e:  # network, unknown name, bad config/split: all user-fixable
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"data.text: could not load Hugging Face dataset {name!r} "
            f"(config={data_cfg.dataset_config!r}, split={data_cfg.split!r}): {msg}"
        ) from None
    return _hf_texts(ds, name, data_cfg.text_column)


def _hf_texts(ds: Any, name: str, column: str) -> Iterator[str]:
    for i, row in enumerate(ds):
        text = _column(row, column, f"dataset {name!r} row {i}")
        if text.strip():
            yield text
