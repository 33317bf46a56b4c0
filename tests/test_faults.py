"""Faults and abuse: a second writer, a full disk, a killed run, labels of retrained weights, and
verbs that must not write outside their outputs. The fast cases are here; the slow ones (a full
tmpfs under every long verb, kill -9 in every long verb, concurrent writers) are marked slow.
docs/robustness.md tabulates what is tried and the outcome.

A full disk is a real small tmpfs where this process may mount one (root on Linux); elsewhere the
fast case raises ENOSPC from the real write call (safetensors' `save_file`, SQLite's commit) at a
file boundary instead: each test says which it used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tiny_world import base_toml

from monosemantic.cli import app
from monosemantic.store.feature_store import FeatureStore
from monosemantic.utils.lock import lock_file, output_lock

HOLD = """
import sys, time
from monosemantic.utils.lock import output_lock
with output_lock(sys.argv[1], "train.out"):
    print("held", flush=True)
    time.sleep(600)
"""


def _case(world: dict[str, Path], case: Path, *more: str) -> Path:
    case.mkdir(parents=True, exist_ok=True)
    cfg = case / "c.toml"
    cfg.write_text(base_toml(world, case) + "\n".join(more) + "\n")
    return cfg


def _one_line(result) -> str:
    """The error line: the last on stderr and the only one (progress and notes may precede it)."""
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error:")]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.stderr
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


@contextmanager
def _holder(path: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the lock of output `path` (as a running `train` would)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_writer_gets_one_line_naming_the_holder(tiny_world, tmp_path, cli_runner):
    cfg = _case(tiny_world, tmp_path / "case")
    out = tmp_path / "case" / "train"
    with _holder(out) as holder:
        result = cli_runner.invoke(
            app, ["train", str(cfg), "--set", f'data.activations="{tiny_world["acts"]}"']
        )
        line = _one_line(result)
        assert f"in use by another monosemantic process (PID {holder.pid})" in line and "train.out" in line
        assert not out.exists()  # refused before any work
    # the holder was killed (SIGKILL): the kernel released its lock, the run goes ahead
    result = cli_runner.invoke(app, ["train", str(cfg), "--set", f'data.activations="{tiny_world["acts"]}"'])
    assert result.exit_code == 0, result.stderr
    assert (out / "sae_weights.safetensors").is_file() and not lock_file(out).exists()


def test_one_lock_per_output_shared_by_analyze_and_explain(tiny_world, tmp_path, cli_runner):
    cfg = _case(tiny_world, tmp_path / "case")
    analysis = tmp_path / "case" / "analysis"
    cli_runner.invoke(app, ["analyze", str(cfg)])
    with _holder(analysis):  # an analyze rewriting the folder holds this lock
        result = cli_runner.invoke(
            app, ["explain", str(cfg), "--set", f'explain.db="{analysis / "features.db"}"']
        )
        assert "in use by another monosemantic process" in _one_line(result)


def test_circuit_adds_its_graph_to_the_store_under_analyzes_lock(tiny_world, tmp_path, cli_runner):
    """An analyze rewriting the store's folder holds its lock: circuit's graph.json is written, and
    adding the graph to the store is refused in one line instead of going into a replaced file."""
    case = tmp_path / "case"
    cfg = _case(tiny_world, case)
    tc = tiny_world["tc"]
    overrides = ["--set", f'analyze.dictionary="{tc}"', "--set", f'circuit.dictionaries=["{tc}"]',
                 "--set", "analyze.top_k=2"]  # fmt: skip
    assert cli_runner.invoke(app, ["analyze", str(cfg), *overrides]).exit_code == 0
    with _holder(case / "analysis") as holder:
        result = cli_runner.invoke(app, ["circuit", str(cfg), *overrides])
        line = _one_line(result)
        assert f"PID {holder.pid}" in line and "analyze.out" in line
    assert (case / "circuit" / "graph.json").is_file()
    assert cli_runner.invoke(app, ["circuit", str(cfg), *overrides]).exit_code == 0  # once released


def test_the_lock_is_reentrant_and_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with output_lock(out, "x.out"), output_lock(out, "x.out"):  # demo runs verbs inside verbs
        assert lock_file(out).is_file()
        assert lock_file(out).read_text().strip() == str(os.getpid())
    assert not lock_file(out).exists() and not (tmp_path / "a").exists()  # parents it made: removed


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0  # fmt: skip


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """(folder, True) on a 1 MiB tmpfs; (plain folder, False) where none can be mounted."""
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "1m")
    yield disk, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill the disk until `leave` bytes are free."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_full_disk_before_harvest_is_one_line_with_the_space_needed(
    tiny_world, small_disk, tmp_path, cli_runner
):
    disk, mounted = small_disk
    if not mounted:
        pytest.skip("cannot mount a tmpfs here; the ENOSPC-at-the-write cases below still run")
    cfg = _case(tiny_world, tmp_path / "case")
    result = cli_runner.invoke(app, ["harvest", str(cfg), "--set", f'harvest.out="{disk / "acts"}"',
                                     "--set", "data.max_tokens=20000"])  # fmt: skip
    line = _one_line(result)
    assert f"harvest.out '{disk / 'acts'}' needs about" in line and "free" in line
    assert not (disk / "acts").exists()


def test_a_disk_filling_during_harvest_is_one_line_and_the_finished_shards_stay(
    tiny_world, small_disk, tmp_path, cli_runner, monkeypatch
):
    """The space check passes, then another process fills the disk: the shard write fails."""
    import monosemantic.activations.cache as cache_module
    import monosemantic.activations.harvest as harvest_module

    disk, mounted = small_disk
    out = (disk if mounted else tmp_path) / "acts"
    cfg = _case(tiny_world, tmp_path / "case")
    monkeypatch.setattr(harvest_module, "check_free_space", lambda *a: None)
    real_save, calls = cache_module.save_file, []

    def save_file(tensors, filename):  # shard 0 is written; then the disk is full
        calls.append(filename)
        if len(calls) == 2:
            if mounted:
                _fill(disk, 4096)
            else:  # no tmpfs here: the write itself reports ENOSPC half-way, as a full disk does
                Path(filename).write_bytes(b"\0" * 100)
                raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real_save(tensors, filename)

    monkeypatch.setattr(cache_module, "save_file", save_file)
    args = ["harvest", str(cfg), "--set", f'harvest.out="{out}"', "--set", "harvest.shard_sequences=8"]
    line = _one_line(cli_runner.invoke(app, args))
    assert (
        line.startswith("error: disk full writing") and "free" in line and "harvest.out needs about" in line
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.safetensors"]  # intact and recorded
    assert _digest(out / "shard-00000.safetensors") == manifest["shards"][0]["sha256"]
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "shard-00000.safetensors",
    ]  # no temporaries


def test_a_full_disk_in_analyze_is_one_line_and_the_old_store_stays(
    tiny_world, small_disk, tmp_path, cli_runner, monkeypatch
):
    disk, mounted = small_disk
    out = (disk if mounted else tmp_path) / "analysis"
    cfg = _case(tiny_world, tmp_path / "case")
    args = ["analyze", str(cfg), "--set", f'analyze.out="{out}"', "--set", "analyze.top_k=2",
            "--set", "analyze.quantiles=1", "--set", "analyze.per_quantile=1", "--set", "analyze.window=2"]  # fmt: skip
    assert cli_runner.invoke(app, args).exit_code == 0
    before = _digest(out / "features.db")
    if mounted:
        _fill(disk, 8192)
    else:  # the commit of the new store's rows fails as SQLite fails on a full disk
        from monosemantic.store import feature_store

        def full(self, *a, **k):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(feature_store.FeatureStore, "upsert_features", full)
    line = _one_line(cli_runner.invoke(app, [*args[:-2], "--set", "analyze.window=8"]))
    assert line.startswith("error: disk full writing") and "analyze.out needs about" in line
    assert _digest(out / "features.db") == before  # the earlier analysis is untouched
    assert sorted(p.name for p in out.iterdir()) == ["features.db"]


def test_every_verb_writes_only_inside_its_output(tiny_world, tmp_path, cli_runner):
    """Each verb's new files lie under its `out` (circuit also adds its graph to the store, as
    documented); nothing else under the run's folder changes, and no lock file stays."""
    case = tmp_path / "case"
    cfg = _case(tiny_world, case)
    shutil.copyfile(tiny_world["db"], case / "copy.db")
    runs = {
        "harvest": (["harvest"], ["acts"]),
        "train": (["train", "--set", f'data.activations="{tiny_world["acts"]}"'], ["train"]),
        "evaluate": (["evaluate", "--set", "evaluate.plots=false"], ["eval"]),
        "analyze": (["analyze"], ["analysis"]),
        "explain": (["explain"], ["copy.db", "explain_cache"]),
        "export": (["export"], ["site"]),
        "circuit": (
            ["circuit", "--set", f'analyze.out="{case / "analysis"}"'],
            ["circuit", "analysis/features.db"],
        ),
        "compare": (["compare"], ["compare"]),
    }
    for verb, (args, outs) in runs.items():
        before = {p: p.stat().st_mtime_ns for p in case.rglob("*") if p.is_file()}
        result = cli_runner.invoke(app, [args[0], str(cfg), *args[1:]])
        assert result.exit_code == 0, (verb, result.stderr)
        after = {p: p.stat().st_mtime_ns for p in case.rglob("*") if p.is_file()}
        changed = [p for p in after if before.get(p) != after[p]]
        assert changed, verb
        for p in changed:
            rel = p.relative_to(case).as_posix()
            assert any(rel == o or rel.startswith(o + "/") for o in outs), f"{verb} wrote {rel}"
        assert not list(case.rglob("*.lock")), verb


def test_circuit_labels_come_from_the_store_analysis_of_the_same_weights(tiny_world, tmp_path, cli_runner):
    """The store holds an analysis of transcoder `tc`; `tc` is then retrained (same folder, same
    name, other weights): its graph nodes get no labels (and a note), never the old ones."""
    import torch

    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import save_dictionary

    case = tmp_path / "case"
    cfg = _case(tiny_world, case)
    tc = case / "tc"
    shutil.copytree(tiny_world["tc"], tc)
    overrides = ["--set", f'analyze.dictionary="{tc}"', "--set", f'circuit.dictionaries=["{tc}"]',
                 "--set", "analyze.top_k=2"]  # fmt: skip
    assert cli_runner.invoke(app, ["analyze", str(cfg), *overrides]).exit_code == 0

    def labelled() -> tuple[int, str]:
        result = cli_runner.invoke(app, ["circuit", str(cfg), *overrides])
        assert result.exit_code == 0, result.stderr
        nodes = json.loads((case / "circuit" / "graph.json").read_text())["nodes"]
        feats = [n for n in nodes if n.get("feature_type") == "cross layer transcoder"]
        return sum("examples" in n for n in feats), result.stderr

    n_labelled, _ = labelled()
    assert n_labelled > 0
    torch.manual_seed(123)
    meta = json.loads((tc / "cfg.json").read_text())["metadata"]
    fresh = build_dictionary(DictionaryConfig(architecture="topk", d_sae=32, k=4, site=meta["hook_name"],
                                              site_out=meta["hook_name_out"]), 32, 32)  # fmt: skip
    save_dictionary(fresh, tc, {k: meta[k] for k in ("model_name", "hook_name", "hook_name_out")})
    n_labelled, stderr = labelled()
    assert n_labelled == 0 and "has no analysis of the weights of" in " ".join(stderr.split())


def test_a_store_without_fingerprints_is_matched_by_path_with_a_note(tiny_world, tmp_path):
    from monosemantic.dictionaries.io import load_dictionary
    from monosemantic.store.matching import FINGERPRINT, match_rows

    db = tmp_path / "features.db"
    shutil.copyfile(tiny_world["db"], db)
    with FeatureStore(db) as store:
        with store.transaction() as conn:  # as an analyze from before fingerprints wrote it
            for row in store.dictionaries():
                cfg = {k: v for k, v in row["cfg"].items() if k != FINGERPRINT}
                conn.execute("UPDATE dictionaries SET cfg = ? WHERE id = ?", (json.dumps(cfg), row["id"]))
        rows = store.dictionaries()
    sae = load_dictionary(tiny_world["sae"])
    assert match_rows(rows, [sae], [tiny_world["sae"]], ["sae"], db) == [rows[0]["id"]]


# ---- slow: every long verb under a full disk, killed, and raced ------------------------------------
LONG_VERBS = {  # verb -> (extra args, output key, output folder in the case)
    "harvest": (
        ["--set", "data.max_tokens=4096", "--set", "harvest.shard_sequences=16"],
        "harvest.out",
        "acts",
    ),
    "train": (["--set", "train.tokens=60000", "--set", "train.checkpoint_every=50"], "train.out", "train"),
    "lm train": (["--set", "lm.steps=400", "--set", "lm.checkpoint_every=50"], "lm.out", "lm"),
    "evaluate": ([], "evaluate.out", "eval"),
    "analyze": ([], "analyze.out", "analysis"),
    "circuit": ([], "circuit.out", "circuit"),
    "export": ([], "export.html", "site"),
}


def _cli(verb: str, cfg: Path, extra: list[str], world: dict[str, Path]) -> list[str]:
    more = ["--set", f'data.activations="{world["acts"]}"'] if verb == "train" else []
    return [sys.executable, "-m", "monosemantic.cli", *verb.split(), str(cfg), *extra, *more]


@pytest.mark.slow
@pytest.mark.parametrize("verb", sorted(LONG_VERBS))
def test_every_long_verb_on_a_full_disk_is_one_line(verb, tiny_world, tmp_path):
    extra, key, folder = LONG_VERBS[verb]
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "64k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        cfg = _case(tiny_world, tmp_path / "case")
        out = disk / folder
        run = subprocess.run([*_cli(verb, cfg, extra, tiny_world), "--set", f'{key}="{out}"'],
                             capture_output=True, text=True, timeout=900)  # fmt: skip
        lines = [x for x in run.stderr.splitlines() if x.startswith("error:")]
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert len(lines) == 1 and ("free" in lines[0]), run.stderr[-2000:]
        leftovers = [p.name for p in disk.rglob("*") if ".tmp-" in p.name or p.name.endswith(".lock")]
        assert leftovers == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("verb", sorted(LONG_VERBS))
def test_kill_9_in_every_long_verb_releases_its_lock_and_the_rerun_finishes(verb, tiny_world, tmp_path):
    """kill -9 while the verb writes; the rerun is not refused as busy, finishes, leaves no temporaries."""
    extra, _, folder = LONG_VERBS[verb]
    cfg = _case(tiny_world, tmp_path / "case")
    shutil.copyfile(tiny_world["db"], tmp_path / "case" / "copy.db")
    command = _cli(verb, cfg, extra, tiny_world)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "case" / folder
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not lock_file(out).exists():
        time.sleep(0.05)
    time.sleep(1.0)  # into the work
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not lock_file(out).exists()
    assert [p for p in out.parent.rglob("*") if ".tmp-" in p.name] == []


@pytest.mark.slow
def test_concurrent_trainers_into_one_folder_one_runs_the_other_is_refused(tiny_world, tmp_path):
    cfg = _case(tiny_world, tmp_path / "case")
    command = _cli("train", cfg, ["--set", "train.tokens=100000"], tiny_world)
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(p.wait(timeout=900), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "in use by another monosemantic process (PID" in refused
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "case" / "train" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # one writer: no interleaving


def test_the_live_server_refuses_a_checkpoint_retrained_since_analyze(tmp_path):
    """The store row's weight fingerprint no longer matches the checkpoint at its path."""
    import torch

    from monosemantic.config import Config
    from monosemantic.config.dictionary import DictionaryConfig
    from monosemantic.dictionaries import build_dictionary
    from monosemantic.dictionaries.io import save_dictionary
    from monosemantic.dictionaries.provenance import weights_fingerprint
    from monosemantic.server.live import LiveModels
    from monosemantic.server.store_access import LiveStore
    from monosemantic.store.matching import FINGERPRINT
    from monosemantic.utils.errors import MonosemanticError

    site = "blocks.0.hook_resid_post"

    def checkpoint(seed: int):
        torch.manual_seed(seed)
        dic = build_dictionary(DictionaryConfig(architecture="topk", d_sae=16, k=2, site=site), 8, 8)
        return dic, save_dictionary(dic, tmp_path / "sae", {"hook_name": site})

    dic, path = checkpoint(0)
    db = tmp_path / "features.db"
    with FeatureStore.fresh(db) as store:
        did = store.add_dictionary("sae", path=path, hook_name=site, d_in=8, d_sae=16,
                                   cfg={FINGERPRINT: weights_fingerprint(dic)})  # fmt: skip
    live = LiveModels(Config(device="cpu"), LiveStore(db, 0.5))
    assert live.dictionary(did)[0].d_sae == 16  # the analysed weights: served
    time.sleep(0.01)
    checkpoint(1)  # retrained in place
    with pytest.raises(MonosemanticError, match="other weights than the ones analysed"):
        live.dictionary(did)


def test_a_harvest_resumed_with_another_tokenizer_is_refused(tiny_world, tmp_path, cli_runner):
    cfg = _case(tiny_world, tmp_path / "case")
    out = tmp_path / "case" / "acts"
    assert cli_runner.invoke(app, ["harvest", str(cfg)]).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["tokenizer_fingerprint"]) == 16
    manifest.update(
        tokenizer_fingerprint="0123456789abcdef", complete=False
    )  # as if another tokenizer wrote it
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "harvested with another tokenizer" in _one_line(cli_runner.invoke(app, ["harvest", str(cfg)]))
