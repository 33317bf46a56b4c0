"""Harvest under torchrun: ranks write disjoint shards of the single-process cache, one manifest.

Shard i holds windows [i*S, (i+1)*S) exactly as a single-process harvest writes them, and forward
batches never straddle a shard, so every rank computes the same batches a single process would:
the cache is the same, bit for bit. The shards still missing are cut into contiguous runs, one per
rank; each rank records the shards it finished in its own journal (`.harvest-rank-R.json`,
rewritten atomically), so a killed run resumes at the next missing shard on any number of ranks.
When every rank is done, rank 0 lists all shards in order in `manifest.json` and marks it complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from monosemantic.utils import distributed as D
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.files import write_json_atomic
from monosemantic.utils.progress import console, progress_bar

from . import split
from .cache import ShardWriter, save_shard
from .manifest import shard_name, write_manifest
from .prefetch import Prefetch

JOURNAL_GLOB = ".harvest-rank-*.json"


def _journal(out: Path, rank: int) -> Path:
    return out / f".harvest-rank-{rank}.json"


def finished_shards(out: Path, manifest: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Shards already written: those in the manifest plus those in any rank's journal."""
    done = {i: rec for i, rec in enumerate(manifest["shards"])}
    for path in sorted(out.glob(JOURNAL_GLOB)):
        for rec in json.loads(path.read_text()):
            if (out / rec["file"]).is_file():
                done[int(rec["index"])] = {k: rec[k] for k in ("file", "sequences", "sha256")}
    return done


def runs(indices: list[int]) -> Iterator[list[int]]:
    """Maximal runs of consecutive integers (each run reads its windows with one skip)."""
    run: list[int] = []
    for i in indices:
        if run and i != run[-1] + 1:
            yield run
            run = []
        run.append(i)
    if run:
        yield run


# capture(windows, first window index, n windows, advance) -> the shard's tensors, or None.
CaptureShard = Callable[[Iterator[Any], int, int, Callable[[int], None]], "dict[str, Any] | None"]


def harvest_shards(cfg: Any, model: Any, manifest: dict[str, Any], capture_shard: CaptureShard) -> Path:
    """Write this rank's share of the missing shards, then (rank 0) the merged manifest."""
    from monosemantic.corpus.windows import TokenWindows

    out = Path(cfg.harvest.out)
    total = manifest["harvest"]["target_sequences"]
    if total is None:
        raise ConfigError("a distributed harvest needs data.max_tokens (to cut the windows into shards)")
    per, ctx = cfg.harvest.shard_sequences, cfg.data.context_size
    n_shards = -(-total // per)
    if D.is_main():
        ShardWriter(out, manifest)  # writes the manifest (no new shards) and clears stale temporaries
    D.barrier()
    done = finished_shards(out, manifest)
    missing = [i for i in range(n_shards) if i not in done]
    lo, hi = D.split_range(len(missing), D.world_size(), D.rank())
    mine = missing[lo:hi]
    journal = _journal(out, D.rank())
    written = json.loads(journal.read_text()) if journal.exists() else []
    with progress_bar() as bar:
        task = bar.add_task(
            "harvest", total=len(mine) * per * ctx, unit="tok", info=f"{D.world_size()} ranks"
        )
        for run in runs(mine):
            source = TokenWindows(cfg.data, model.tokenizer, skip_windows=run[0] * per)
            with closing(Prefetch(iter(source))) as windows:
                for index in run:
                    n = min(per, total - index * per)
                    shard = capture_shard(windows, index * per, n, lambda k: bar.update(task, advance=k))
                    if shard is None:
                        break  # the text ran out before this shard
                    record = save_shard(out / shard_name(index), shard)
                    written.append({"index": index, **record})
                    write_json_atomic(journal, written)
                    if record["sequences"] < n:
                        break
    D.barrier()
    if D.is_main():
        _merge(out, manifest, n_shards)
    D.barrier()
    return out


def _merge(out: Path, manifest: dict[str, Any], n_shards: int) -> None:
    done = finished_shards(out, manifest)
    shards = []
    for i in range(n_shards):  # a contiguous prefix: a source that ran out ends the cache early
        if i not in done:
            break
        shards.append(done[i])
        if i + 1 < n_shards and shards[-1]["sequences"] < manifest["harvest"]["shard_sequences"]:
            break
    if not shards:
        raise DataError(
            f"data.text {manifest['data']['text']!r} produced no token windows; check the text source"
        )
    manifest["shards"] = shards
    manifest["sequences"] = sum(int(s["sequences"]) for s in shards)
    manifest["tokens"] = manifest["sequences"] * int(manifest["context_size"])
    manifest["complete"] = True
    split.record(manifest)
    write_manifest(out, manifest)
    for path in out.glob(JOURNAL_GLOB):
        path.unlink()
    console.print(f"merged {len(shards)} shards written by {D.world_size()} ranks")
