"""Fetching a release's files from the Hugging Face hub: only the folder or files a config line
names, only when the hub is reachable (files already in the local hub cache are used offline).

Every failure is one line: an unreachable hub (no network, `HF_HUB_OFFLINE=1`) says so and how
to bring the files over by hand; a missing or gated repository says that instead.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

from monosemantic.utils.errors import MonosemanticError
from monosemantic.utils.readers import first_line

_UNREACHABLE = ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectTimeout",
                "ReadTimeout", "Timeout", "MaxRetryError", "NameResolutionError", "HfHubHTTPError")  # fmt: skip
_MISSING = ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError", "GatedRepoError")


def _error(spec: str, repo_id: str, what: str, err: Exception) -> MonosemanticError:
    names = {c.__name__ for c in type(err).__mro__}
    if names & set(_MISSING) and "LocalEntryNotFoundError" not in names:
        return MonosemanticError(
            f"{spec}: {repo_id} has no {what} on the Hugging Face hub, or it is gated ({first_line(err)}); "
            "check the name (and log in with `hf auth login` for a gated repository)"
        )
    if names & set(_UNREACHABLE) or isinstance(err, OSError):  # offline mode, no network, DNS
        return MonosemanticError(
            f"{spec}: the Hugging Face hub is not reachable from here ({first_line(err)}); download "
            f"{repo_id}/{what} on a machine with network access and give its local folder instead"
        )
    return MonosemanticError(
        f"{spec}: fetching {repo_id}/{what} from the Hugging Face hub failed ({first_line(err)})"
    )


def fetch(
    spec: str, repo_id: str, path: str = "", revision: str | None = None, patterns: list[str] | None = None
) -> Path:
    """The local copy of `path` (a folder, a file, or '' for the whole repository) of `repo_id`;
    `patterns` narrow what of it is fetched (default: all of `path`)."""
    from huggingface_hub import snapshot_download

    patterns = patterns or ([path, f"{path}/*"] if path else None)
    try:
        root = Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=patterns))
    except Exception as e:  # huggingface_hub raises many types: classify them in one line
        raise _error(spec, repo_id, path or "files", e) from None
    local = root / path
    if not local.exists():
        raise MonosemanticError(
            f"{spec}: {repo_id} has no {path!r} (the hub listing, or the local hub cache, holds none); check the name"
        )
    return local


def fetch_uri(spec: str, uri: str) -> Path:
    """The local copy of one file named `hf://org/repo/path/to/file[?revision=R]` (circuit-tracer's form)."""
    parsed = urlparse(uri)
    parts = parsed.path.lstrip("/").split("/", 1)
    if parsed.scheme != "hf" or len(parts) != 2 or not parsed.netloc:
        raise MonosemanticError(f"{spec}: {uri!r} is not an hf://org/repo/file URI")
    repo_id, file = f"{parsed.netloc}/{parts[0]}", parts[1]
    revision = parse_qs(parsed.query).get("revision", [None])[0]
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=file, revision=revision))
    except Exception as e:
        raise _error(spec, repo_id, file, e) from None
