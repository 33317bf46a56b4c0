"""Feature dashboards: the data the viewer shows and where its HTML/CSS/JS assets live."""

from pathlib import Path

from monosemantic.exports.dashboard.data import (
    dictionary_summary,
    feature_payload,
    index_row,
    index_rows,
    payload_from,
    site_summary,
)

ASSETS = Path(__file__).resolve().parent.parent / "templates" / "dashboard"

__all__ = [
    "ASSETS",
    "dictionary_summary",
    "feature_payload",
    "index_row",
    "index_rows",
    "payload_from",
    "site_summary",
]
