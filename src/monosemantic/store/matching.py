"""Which feature-store dictionary describes a loaded dictionary: by its weights, not its name.

`analyze` records each dictionary's weight fingerprint (`dictionaries.provenance`) in the store's
`cfg`; a circuit, the live server and `SpliceModel.feature` look labels up by it. A checkpoint
retrained under the same name (or copied elsewhere) finds its own analysis or none, never another's.
A store written before fingerprints existed is matched by path, then name with site and width, as
before, with a one-line note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monosemantic.dictionaries.provenance import weights_fingerprint
from monosemantic.utils.progress import console

FINGERPRINT = "weights_fingerprint"  # key of the store's dictionaries.cfg


def match_rows(
    rows: list[dict[str, Any]], dics: list[Any], paths: list[Path], names: list[str], store: Path | str
) -> list[int | None]:
    """The store id describing each of `dics` (None: the store has no analysis of those weights)."""
    prints = [weights_fingerprint(d) for d in dics]
    by_print = {r["cfg"].get(FINGERPRINT): r["id"] for r in rows if r["cfg"].get(FINGERPRINT)}
    if not by_print and rows:
        console.print(
            f"[yellow]note:[/] {store} records no weight fingerprints (an older analyze): labels are "
            "matched by path and name; rerun `monosemantic analyze` to match them by weights",
            highlight=False,
            soft_wrap=True,
        )
        return [_by_path_or_name(rows, d, p, n) for d, p, n in zip(dics, paths, names, strict=True)]
    ids = [by_print.get(fp) for fp in prints]
    missing = [n for n, i in zip(names, ids, strict=True) if i is None]
    if missing and rows:
        console.print(
            f"[yellow]note:[/] {store} has no analysis of the weights of {', '.join(missing)} (retrained "
            "or never analysed): their features are unlabelled; rerun `monosemantic analyze` on them",
            highlight=False,
            soft_wrap=True,
        )
    return ids


def _by_path_or_name(rows: list[dict[str, Any]], dic: Any, path: Path, name: str) -> int | None:
    """The old rule: the same checkpoint path, else the same name with the same site and width."""
    for r in rows:
        if r.get("path") and Path(r["path"]).resolve() == Path(path).resolve():
            return r["id"]
    for r in rows:
        if r["name"] == name and r.get("hook_name") == dic.cfg.hook_name and r.get("d_sae") == dic.cfg.d_sae:
            return r["id"]
    return None
