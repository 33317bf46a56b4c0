"""`harvest(cfg)`: capture every requested site in one forward pass into an activation cache.

The forward pass stops after the last block a site needs. Shards are written whole (temporary name,
rename, then recorded in the manifest), so rerunning the same command after a crash resumes at the
next shard and ends with the same manifest and tensors as an uninterrupted run. Forward batches
never straddle a shard boundary, so a resumed run batches sequences exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from monosemantic.config import Config
from monosemantic.corpus.windows import apply_special_tokens, bos_eos_ids, special_token_ids
from monosemantic.lm.sites import HOOK_NAMES
from monosemantic.utils import distributed as D
from monosemantic.utils.errors import ConfigError, DataError
from monosemantic.utils.files import check_output
from monosemantic.utils.progress import console, progress_bar
from monosemantic.utils.torch_utils import torch_dtype

from . import split
from .cache import ShardWriter
from .manifest import FORMAT_VERSION, manifest_path, mismatch, read_manifest
from .prefetch import Prefetch
from .sources import all_finite, capture

if TYPE_CHECKING:
    from monosemantic.lm.model import SubjectModel


def model_location(name: str) -> str:
    """What `AutoModelForCausalLM.from_pretrained` accepts: the shipped LM's absolute folder,
    an absolute local folder, or the hub id unchanged."""
    if name == "storyworld":
        from monosemantic.lm.model import resolve_model_path

        return str(Path(resolve_model_path(name)).resolve())
    return str(Path(name).resolve()) if Path(name).exists() else name


def _data_description(data: Any) -> dict[str, Any]:
    text = data.text
    if text != "storyworld" and Path(text).exists():
        text = str(Path(text).resolve())
    described = {
        "text": text,
        "text_column": data.text_column,
        "dataset_config": data.dataset_config,
        "split": data.split,
        "seed": data.seed,
        "max_tokens": data.max_tokens,
    }
    # recorded only when set, so caches harvested before these fields existed still resume
    described.update({k: getattr(data, k) for k in ("bos_token", "eos_token") if getattr(data, k, None)})
    if data.format == "chat":
        described |= {"format": "chat", "messages_column": data.messages_column,
                      "chat_template": str(data.chat_template) if data.chat_template else None}  # fmt: skip
    return described


def target_sequences(cfg: Config) -> int | None:
    """Windows to harvest: ceil(data.max_tokens / context_size), as TokenWindows counts them
    (None: the whole finite source)."""
    if cfg.data.max_tokens is None:
        if cfg.data.text == "storyworld":
            raise ConfigError(
                "storyworld text is unlimited; set data.max_tokens (e.g. --set data.max_tokens=1000000)"
            )
        return None
    return -(-cfg.data.max_tokens // cfg.data.context_size)


def planned_manifest(cfg: Config) -> dict[str, Any]:
    """The manifest this config would write, before the model is loaded (site widths unknown)."""
    location = model_location(cfg.model.name)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "hook_names": HOOK_NAMES,  # the sites mean exactly what TransformerLens means
        "model": location,
        "revision": cfg.model.revision,
        "tokenizer": location,
        "sites": {s: None for s in dict.fromkeys(cfg.sites.names)},
        "dtype": cfg.harvest.dtype,
        "context_size": cfg.data.context_size,
        "special_tokens": cfg.data.special_tokens,
        "special_token_ids": [],
        "train_on": cfg.data.train_on,
        "prepend_bos": cfg.data.prepend_bos,
        "data": _data_description(cfg.data),
        "harvest": {
            "model_dtype": cfg.model.dtype,
            "shard_sequences": cfg.harvest.shard_sequences,
            "target_sequences": target_sequences(cfg),
        },
        "sequences": 0,
        "tokens": 0,
        "complete": False,
        "shards": [],
        split.KEY: split.planned(cfg.harvest.eval_seed, cfg.harvest.eval_fraction),
    }
    if cfg.data.text == "storyworld":
        from monosemantic.corpus.concepts import CONCEPTS

        manifest["concepts"] = [c.name for c in CONCEPTS]
    if cfg.data.format == "chat":
        from monosemantic.corpus.chat import ROLES

        manifest["roles"] = list(ROLES)  # shards hold `roles` [n_seq, ctx]: each token's code in this list
    return manifest


def _existing(out: Path, planned: dict[str, Any]) -> dict[str, Any] | None:
    if not manifest_path(out).exists():
        if out.exists() and any(out.iterdir()):
            raise DataError(
                f"harvest.out {str(out)!r} exists and is not an activation cache; choose a new "
                "harvest.out or empty that folder"
            )
        return None
    existing = read_manifest(out)
    if not existing.get("shards") and not existing.get("complete"):
        return None  # a run that died before its first shard: nothing to resume or protect
    why = mismatch(existing, planned)
    if why is not None:
        raise DataError(
            f"the activation cache at {out} does not match this config ({why}); "
            f"choose a new harvest.out or delete {out} to harvest again"
        )
    return existing


def _next_shard(
    model: SubjectModel,
    windows: Iterator[Any],
    first: int,
    n_shard: int,
    cfg: Config,
    stop_at: int | None,
    with_concepts: bool,
    advance: Callable[[int], None],
) -> dict[str, torch.Tensor] | None:
    """Capture up to `n_shard` windows in forward batches that never leave the shard (so a resumed
    run batches exactly like an uninterrupted one); None when the text is exhausted."""
    sites, storage = list(dict.fromkeys(cfg.sites.names)), torch_dtype(cfg.harvest.dtype)
    parts: dict[str, list[torch.Tensor]] = {
        "tokens": [],
        "concepts": [],
        "roles": [],
        **{s: [] for s in sites},
    }
    taken = 0
    while taken < n_shard:
        batch = list(islice(windows, min(cfg.harvest.batch_size, n_shard - taken)))
        if not batch:
            break
        tokens = torch.stack([w.tokens for w in batch]).long()
        acts = capture(model, tokens, sites, stop_at)
        for site in sites:
            x = acts[site].to("cpu", storage)
            if not all_finite(x):
                raise DataError(
                    f"NaN or inf activations at {site} for windows {first + taken}:"
                    f"{first + taken + len(batch)}; the model produced non-finite values or values "
                    f"too large for harvest.dtype={cfg.harvest.dtype} (try float32)"
                )
            parts[site].append(x)
        parts["tokens"].append(tokens.to(torch.int32))
        if with_concepts:
            parts["concepts"].append(torch.stack([w.concepts for w in batch]).to(torch.uint8))
        if batch[0].roles is not None:  # chat data: each token's role
            parts["roles"].append(torch.stack([w.roles for w in batch]).to(torch.uint8))
        taken += len(batch)
        advance(len(batch) * tokens.shape[1])
    return {k: torch.cat(v) for k, v in parts.items() if v} if taken else None


def harvest(cfg: Config) -> Path:
    """Write (or finish) the activation cache of docs/design.md (activation cache) at `cfg.harvest.out`
    (under torchrun, every rank writes a share of the shards)."""
    with D.session(cfg.model.device):
        return _harvest(cfg)


def _harvest(cfg: Config) -> Path:
    out = Path(cfg.harvest.out)
    check_output(out, "harvest.out")
    planned = planned_manifest(cfg)
    existing = _existing(out, planned)
    if existing is not None and existing.get("complete"):
        console.print(
            f"activation cache at {out} is complete ({existing['sequences']} sequences, "
            f"{existing['tokens']} tokens); nothing to do"
        )
        return out

    from monosemantic.lm.big import BigModel
    from monosemantic.lm.model import load_model

    m = cfg.model
    model = load_model(
        m.name, dtype=m.dtype, device=m.device, revision=m.revision, big=BigModel.from_config(m)
    )
    sites = list(planned["sites"])
    model.check_sites(sites)  # before anything is written: lists the valid sites
    model.check_context(cfg.data.context_size)
    stop_at = model.stop_layer(sites)
    manifest = existing or planned
    manifest["sites"] = {s: int(model.site_width(s)) for s in sites}
    manifest["model_type"] = model.hf.config.model_type
    apply_special_tokens(model.tokenizer, cfg.data)
    bos_eos_ids(model.tokenizer)  # a tokenizer that cannot separate documents fails before any write
    manifest["special_token_ids"] = special_token_ids(model.tokenizer)
    if cfg.data.format == "chat":
        from monosemantic.corpus.chat import chat_template, template_fingerprint

        manifest["chat_template"] = template_fingerprint(
            chat_template(model.tokenizer, cfg.data.chat_template, m.name)
        )
    fresh = existing is None
    new_folder = not out.exists()
    if D.world_size() > 1:  # ranks write disjoint shards of the same cache (distributed_harvest.py)
        from .distributed_harvest import harvest_shards

        def capture_shard(windows: Iterator[Any], first: int, n: int, advance: Callable[[int], None]) -> Any:
            return _next_shard(model, windows, first, n, cfg, stop_at, "concepts" in manifest, advance)

        return harvest_shards(cfg, model, manifest, capture_shard)
    writer = ShardWriter(out, manifest)
    try:
        return _fill(cfg, model, writer, manifest, stop_at, out)
    except BaseException:
        if fresh and writer.n_sequences == 0:  # leave nothing that blocks the corrected rerun
            manifest_path(out).unlink(missing_ok=True)
            if new_folder and not any(out.iterdir()):
                out.rmdir()
        raise


def _fill(
    cfg: Any, model: Any, writer: ShardWriter, manifest: dict[str, Any], stop_at: int | None, out: Path
) -> Path:
    """Write shards until the target (or the text) is exhausted, then mark the cache complete."""
    from monosemantic.corpus.windows import TokenWindows

    ctx, per_shard = cfg.data.context_size, cfg.harvest.shard_sequences
    total = manifest["harvest"]["target_sequences"]
    done = writer.n_sequences
    windows = Prefetch(iter(TokenWindows(cfg.data, model.tokenizer, skip_windows=done)))
    with progress_bar() as bar, closing(windows):
        task = bar.add_task(
            "harvest", total=None if total is None else total * ctx, completed=done * ctx, unit="tok", info=""
        )
        while total is None or done < total:
            n_shard = per_shard if total is None else min(per_shard, total - done)
            bar.update(task, info=f"shard {len(manifest['shards'])}")
            shard = _next_shard(
                model,
                windows,
                done,
                n_shard,
                cfg,
                stop_at,
                "concepts" in manifest,
                lambda n: bar.update(task, advance=n),
            )
            if shard is None:
                break  # the text source is exhausted
            writer.write(shard)
            done = writer.n_sequences
            if shard["tokens"].shape[0] < n_shard:
                break
    if done == 0:
        raise DataError(f"data.text {cfg.data.text!r} produced no token windows; check the text source")
    writer.finish()
    return out
