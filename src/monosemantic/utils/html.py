"""JSON inside a page's `<script>` element, escaped so that no string can end or re-open it.

`</` alone is not enough: `<!--<script>` in a graph's JSON (a posted prompt is enough) puts the
HTML parser in its "double escaped" state, where the element's own `</script>` no longer ends
it and the page's next script is swallowed as data. With `<`, `>` and `&` written as `\\u003c`,
`\\u003e` and `\\u0026` (and the JavaScript line separators U+2028/9 escaped), the JSON text holds
no markup at all, and `JSON.parse` / a JavaScript literal reads back the same strings.
"""

from __future__ import annotations

import json
import math
from typing import Any

ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
TABLE = str.maketrans(ESCAPES)


def _finite(obj: Any) -> Any:
    """NaN and infinities (which JSON cannot hold, and JSON.parse refuses) as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def script_json(obj: Any, compact: bool = True) -> str:
    """`obj` as JSON safe to place inside `<script>...</script>`; a NaN or infinity becomes null."""
    separators = (",", ":") if compact else None
    try:
        text = json.dumps(obj, separators=separators, allow_nan=False, ensure_ascii=False)
    except ValueError:
        text = json.dumps(_finite(obj), separators=separators, allow_nan=False, ensure_ascii=False)
    return text.translate(TABLE)
