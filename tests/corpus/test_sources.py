from __future__ import annotations

import json
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monosemantic.config.data import DataConfig
from monosemantic.corpus.sources import iter_texts
from monosemantic.corpus.storyworld import generate_stories
from monosemantic.utils.errors import DataError


def test_storyworld_source_uses_data_seed():
    texts = list(islice(iter_texts(DataConfig(text="storyworld", seed=4)), 5))
    assert texts == [s.text for s in generate_stories(4, 5)]
    assert texts != list(islice(iter_texts(DataConfig(text="storyworld", seed=5)), 5))


def test_txt_one_document_per_paragraph(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("First doc line one.\nline two.\n\n\nSecond doc.\n   \nThird doc.\n")
    assert list(iter_texts(DataConfig(text=str(f)))) == [
        "First doc line one.\nline two.",
        "Second doc.",
        "Third doc.",
    ]


def test_jsonl_and_parquet_columns(tmp_path):
    j = tmp_path / "a.jsonl"
    j.write_text(
        "\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(["x one", "", "x two"])) + "\n"
    )
    assert list(iter_texts(DataConfig(text=str(j), text_column="body"))) == ["x one", "x two"]
    with pytest.raises(DataError, match="no field 'text'"):
        list(iter_texts(DataConfig(text=str(j))))
    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"content": ["p one", "p two", None]}), p)
    assert list(iter_texts(DataConfig(text=str(p), text_column="content"))) == ["p one", "p two"]
    with pytest.raises(DataError, match="no column 'text'"):
        list(iter_texts(DataConfig(text=str(p))))


def test_folder_reads_supported_files_in_sorted_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("from b\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "from a"}) + "\n")
    pq.write_table(pa.table({"text": ["from c"]}), tmp_path / "sub" / "c.parquet")
    (tmp_path / "ignored.csv").write_text("text\nnope\n")
    assert list(iter_texts(DataConfig(text=str(tmp_path)))) == ["from a", "from b", "from c"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no"):
        iter_texts(DataConfig(text=str(empty)))


@pytest.mark.parametrize("text", ["missing.txt", "./nowhere/data.jsonl", "/no/such/file.parquet", "./no_dir"])
def test_missing_file_is_a_clear_error(text):
    with pytest.raises(DataError, match="does not exist") as e:
        iter_texts(DataConfig(text=text))
    assert "\n" not in str(e.value)


def test_hf_dataset_via_load_dataset(tmp_path, monkeypatch):
    """The hub is unreachable here; `load_dataset` on a local parquet folder runs the same code path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pq.write_table(pa.table({"text": ["h one", "h two", "h three"]}), tmp_path / "train-00000.parquet")
    assert list(iter_texts(DataConfig(text=f"hf:{tmp_path}"))) == ["h one", "h two", "h three"]
    with pytest.raises(DataError, match="could not load Hugging Face dataset"):
        iter_texts(DataConfig(text=f"hf:{tmp_path}", split="validation"))
