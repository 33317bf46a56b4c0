"""The one atomic-folder helper: both replacement behaviours, and a failure leaves the old folder."""

import pytest

from monosemantic.utils.files import atomic_dir


def _write(folder, **files):
    for name, text in files.items():
        (folder / name).write_text(text)


def test_atomic_dir_replaces_or_keeps_extra_entries(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        _write(tmp, a="1", b="1")
    (out / "extra").mkdir()
    with atomic_dir(out) as tmp:  # an export: the folder is replaced wholesale
        _write(tmp, a="2")
    assert sorted(p.name for p in out.iterdir()) == ["a"] and (out / "a").read_text() == "2"
    (out / "trainer_state").mkdir()
    with atomic_dir(out, keep_extra=True) as tmp:  # a checkpoint: trainer_state/ stays beside it
        _write(tmp, a="3", c="3")
    assert sorted(p.name for p in out.iterdir()) == ["a", "c", "trainer_state"]
    assert (out / "a").read_text() == "3"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporaries left


def test_atomic_dir_failure_keeps_the_old_folder(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        _write(tmp, a="1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        _write(tmp, a="2")
        raise RuntimeError("interrupted")
    assert (out / "a").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["out"]
