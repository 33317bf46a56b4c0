"""The on-disk activation cache: sequence-major safetensors shards listed in `manifest.json`.

Each shard holds `tokens` int32 [n_seq, ctx], one tensor per site [n_seq, ctx, d] in the storage
dtype and, for storyworld, `concepts` uint8 [n_seq, ctx, n_concepts]. Sequence-major storage keeps
context for analysis; training shuffles tokens through a buffer (`buffer.py`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from monosemantic.utils.errors import DataError
from monosemantic.utils.files import atomic_path, sha256_file
from monosemantic.utils.progress import console

from . import split
from .manifest import read_manifest, shard_name, write_manifest

if TYPE_CHECKING:
    from monosemantic.lm.model import SubjectModel


def _site_keys(manifest: dict[str, Any], path: Path) -> tuple[dict[str, str], str | None]:
    """Today's site names -> the shard keys, and a one-line note when an old cache's names were
    translated (see `lm.sites.migrate_site`); a cache with `hook_names` is read as written."""
    from monosemantic.lm.sites import HOOK_NAMES, migrate_site, migration_note

    sites = list(manifest["sites"])
    if manifest.get("hook_names") == HOOK_NAMES:
        return {s: s for s in sites}, None
    model_type = manifest.get("model_type") or _model_type(manifest.get("model"))
    keys = {migrate_site(s, model_type): s for s in sites}
    renamed = {old: new for new, old in keys.items() if new != old}
    return keys, (migration_note(renamed, f"activation cache {path}") if renamed else None)


def _model_type(model: str | None) -> str | None:
    """The model_type of a cache's model when its config is readable offline (BERT's old names differ)."""
    if not model:
        return None
    try:
        from transformers import AutoConfig

        from monosemantic.lm.model import resolve_model_path

        return AutoConfig.from_pretrained(resolve_model_path(model), local_files_only=True).model_type
    except Exception:  # an unreadable config: decoder names (the only ones most caches hold)
        return None


class ActivationCache:
    """Read-only view of a cache directory; only shards listed in the manifest are visible."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = read_manifest(self.path)
        # site name -> its key in the shards (they differ only in caches written under old names)
        self._keys, note = _site_keys(self.manifest, self.path)
        self.sites: dict[str, int] = {new: self.manifest["sites"][old] for new, old in self._keys.items()}
        if note is not None:
            console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        self.context_size: int = int(self.manifest["context_size"])
        self.shards: list[dict[str, Any]] = list(self.manifest["shards"])
        self.concepts: list[str] | None = self.manifest.get("concepts")
        # chat data: shards hold each token's role (a code into this list, `corpus.chat.ROLES`)
        self.roles: list[str] | None = self.manifest.get("roles")
        self._special = torch.tensor(self.manifest.get("special_token_ids", []), dtype=torch.int64)
        self._verified: set[int] = set()  # shards whose sha256 matched: hashed once per reader

    @property
    def n_sequences(self) -> int:
        return sum(int(s["sequences"]) for s in self.shards)

    @property
    def n_tokens(self) -> int:
        return self.n_sequences * self.context_size

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete", False))

    def incomplete_note(self) -> str | None:
        """A one-line warning when the harvest that wrote this cache did not finish (else None)."""
        if self.complete:
            return None
        return (
            f"the harvest at {self.path} is unfinished (killed or still running); using its "
            f"{self.num_shards} complete shards ({self.n_sequences:,} sequences). Rerun `monosemantic "
            "harvest` with the same config to finish it"
        )

    def shard_path(self, i: int) -> Path:
        return self.path / self.shards[i]["file"]

    def check_sites(self, sites: Sequence[str]) -> None:
        missing = [s for s in sites if s not in self.sites]
        if missing:
            raise DataError(
                f"site(s) {', '.join(missing)} are not in the activation cache {self.path} "
                f"(it holds {', '.join(self.sites)}); harvest them into a new harvest.out"
            )

    def verify_shard(self, i: int) -> None:
        """Compare the shard's sha256 with the one recorded when it was written (once per reader)."""
        if i in self._verified:
            return
        path = self.shard_path(i)
        if not path.is_file():
            raise DataError(f"shard {path.name} of cache {self.path} is missing; harvest the cache again")
        if sha256_file(path) != self.shards[i]["sha256"]:
            raise DataError(
                f"shard {path.name} of cache {self.path} is corrupted (sha256 mismatch); "
                "delete it and the cache's manifest entry, or harvest the cache again"
            )
        self._verified.add(i)

    def check_finite(
        self, i: int, tensors: dict[str, torch.Tensor], sites: Sequence[str], rows: torch.Tensor
    ) -> None:
        """Refuse NaN/inf activations in shard `i` (`rows`: the tensors' sequence numbers within it),
        naming the shard, the site and the sequences."""
        for site in sites:
            bad = ~torch.isfinite(tensors[site]).flatten(1).all(1)
            if bad.any():
                rows = rows[bad].tolist()
                more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
                raise DataError(
                    f"shard {self.shards[i]['file']} of cache {self.path}: {site} holds NaN or inf in "
                    f"sequence(s) {', '.join(map(str, rows[:5]))}{more}; harvest the cache again"
                )

    def load_shard(
        self,
        i: int,
        sites: Sequence[str] | None = None,
        verify: bool = True,
        start: int = 0,
        stop: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tensors of shard `i` (sequences start:stop): `tokens`, the sites, and `concepts` if stored.

        Only the requested sites are read from disk (safetensors slices are memory-mapped).
        """
        if not 0 <= i < self.num_shards:
            raise DataError(f"cache {self.path} has {self.num_shards} shards; shard {i} does not exist")
        sites = list(self.sites) if sites is None else list(sites)
        self.check_sites(sites)
        if verify:
            self.verify_shard(i)
        path = self.shard_path(i)
        keys = ["tokens", *sites] + (["concepts"] if self.concepts is not None else [])
        keys += ["roles"] if self.roles is not None else []
        out: dict[str, torch.Tensor] = {}
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in keys:
                    out[key] = f.get_slice(self._keys.get(key, key))[start:stop]
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as e:
            raise DataError(f"shard {path.name} of cache {self.path} cannot be read ({e})") from None
        n_seq = out["tokens"].shape[0]
        for site in sites:
            expected = (n_seq, self.context_size, self.sites[site])
            if tuple(out[site].shape) != expected:
                raise DataError(
                    f"shard {path.name}: {site} has shape {tuple(out[site].shape)}, the manifest "
                    f"says {list(expected)}; the cache is inconsistent, harvest it again"
                )
        return out

    def iter_sequences(
        self, sites: Sequence[str] | None = None, batch_sequences: int = 32, verify: bool = True
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of exactly `batch_sequences` sequences (the last may be shorter), across shards;
        every shard is checked for NaN/inf (and with `verify`, its sha256) before it is used."""
        return self.iter_sample(None, sites, batch_sequences, verify)

    def iter_sample(
        self,
        indices: torch.Tensor | None,
        sites: Sequence[str] | None = None,
        batch_sequences: int = 32,
        verify: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Like `iter_sequences`, over the sequences `indices` only (sorted global sequence
        numbers; None: all), plus `seq_ids` giving each row's sequence number."""
        sites = list(self.sites) if sites is None else list(sites)
        pending: list[dict[str, torch.Tensor]] = []
        have = first = 0
        for i in range(self.num_shards):
            n = int(self.shards[i]["sequences"])
            ids = torch.arange(first, first + n)
            if indices is not None:
                ids = indices[(indices >= first) & (indices < first + n)]
            if len(ids) == 0:
                first += n
                continue
            lo, hi = int(ids[0]) - first, int(ids[-1]) - first + 1
            shard = self.load_shard(i, sites, verify=verify, start=lo, stop=hi)
            shard = {k: v[ids - first - lo] for k, v in shard.items()} if indices is not None else shard
            self.check_finite(i, shard, sites, rows=ids - first)
            shard["seq_ids"] = ids
            first += n
            pending.append(shard)
            have += shard["tokens"].shape[0]
            while have >= batch_sequences:
                merged = {k: torch.cat([p[k] for p in pending]) for k in pending[0]}
                yield {k: v[:batch_sequences] for k, v in merged.items()}
                rest = {k: v[batch_sequences:] for k, v in merged.items()}
                have -= batch_sequences
                pending = [rest] if have else []
        if have:
            yield {k: torch.cat([p[k] for p in pending]) for k in pending[0]}

    def special_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """True where a token is one of the special ids (BOS/EOS/PAD) recorded at harvest time."""
        return torch.isin(tokens.long(), self._special)

    @property
    def excludes_special(self) -> bool:
        """The special-token policy recorded at harvest time (`data.special_tokens`)."""
        return self.manifest.get("special_tokens", "exclude") == "exclude"

    @property
    def train_on(self) -> str:
        """The chat-role policy recorded at harvest time (`data.train_on`): "all", "user" or "assistant"."""
        return str(self.manifest.get("train_on", "all"))

    def keep_mask(
        self, tokens: torch.Tensor, roles: torch.Tensor | None = None, train_on: str | None = None
    ) -> torch.Tensor:
        """True at the positions statistics should count under the recorded policies: every
        position, or every non-special one, and for chat data (`roles`, the batch's role codes)
        only the tokens of the `train_on` role (default: the recorded one). Every consumer of a
        cache's statistics asks here."""
        from monosemantic.corpus.chat import role_mask

        keep = torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
        if self.excludes_special:
            keep = ~self.special_mask(tokens)
        policy = train_on or self.train_on
        if policy != "all":
            if roles is None:
                raise DataError(
                    f"cache {self.path} restricts statistics to {policy} tokens, but this batch carries no roles; "
                    "harvest the chat data again"
                )
            keep &= role_mask(roles.to(keep.device), policy)
        return keep

    def load_model(
        self, device: torch.device | str | None = None, fallback: str | None = None
    ) -> SubjectModel:
        """The subject model that produced this cache, as it was harvested: the manifest's model,
        revision and dtype (`fallback` names the model if an old manifest lacks it)."""
        from monosemantic.lm.model import load_model

        m = self.manifest
        name = m.get("model") or fallback
        if name is None:
            raise DataError(f"{self.path}'s manifest names no model; set model.name")
        dtype = (m.get("harvest") or {}).get("model_dtype") or "float32"
        return load_model(str(name), dtype=dtype, device=device, revision=m.get("revision"))


class ShardWriter:
    """Appends shards to a cache: write to a temporary name, rename, then record in the manifest."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.path.mkdir(parents=True, exist_ok=True)
        # A run killed inside save_file leaves a temporary; shards past the manifest are unrecorded.
        for stale in self.path.glob(".shard-*.safetensors.tmp-*"):
            stale.unlink(missing_ok=True)
        write_manifest(self.path, self.manifest)

    @property
    def n_sequences(self) -> int:
        return sum(int(s["sequences"]) for s in self.manifest["shards"])

    def write(self, tensors: dict[str, torch.Tensor]) -> Path:
        target = self.path / shard_name(len(self.manifest["shards"]))
        self.manifest["shards"].append(save_shard(target, tensors))
        self.manifest["sequences"] = self.n_sequences
        self.manifest["tokens"] = self.n_sequences * int(self.manifest["context_size"])
        split.record(self.manifest)
        write_manifest(self.path, self.manifest)
        return target

    def finish(self) -> None:
        self.manifest["complete"] = True
        write_manifest(self.path, self.manifest)


def save_shard(target: Path, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Write one shard whole (temporary name, fsync, rename); its manifest record."""
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(target) as tmp:
        save_file(contiguous, str(tmp))
        tmp.chmod(0o644)  # the writer may create it private; caches are shared read-only data
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
    return {"file": target.name, "sequences": int(contiguous["tokens"].shape[0]), "sha256": digest}
