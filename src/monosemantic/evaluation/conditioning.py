"""When CE loss recovered can be read, and what to read instead.

CE recovered = (CE_zero - CE_spliced) / (CE_zero - CE_clean) divides by the cost of zero-ablating
the site. Where that cost is small (one MLP of a small LM: a few hundredths of a nat), a splice
that barely changes the model reads as a large loss (the demo's transcoder-L2: 85.5% recovered at
KL 0.0014), and noise can push it past 100% (neurons-L1: 101%). So every result carries the CE
increase in nats and the KL beside it, and `ce_loss_recovered_reliable` is false when the
zero-ablation increase is under `evaluate.ce_recovered_min_increase` (default 0.1 nats); tables
then show the flag instead of the percentage.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_MIN_INCREASE = 0.1
FLAG = "low gap"


def _zero_ablation_increase(r: dict[str, Any]) -> float | None:
    src = r if "ce_loss_zero_ablated" in r else r.get("all_mlps_replaced") or {}
    zero, clean = src.get("ce_loss_zero_ablated"), src.get("ce_loss_clean")
    if not isinstance(zero, (int, float)) or not isinstance(clean, (int, float)):
        return None
    return float(zero) - float(clean)


def flag_conditioning(r: dict[str, Any], min_increase: float = DEFAULT_MIN_INCREASE) -> None:
    """Add `ce_loss_zero_ablation_increase`, `ce_loss_increase` and `ce_loss_recovered_reliable`
    to one dictionary's metrics (nothing when it has no spliced CE)."""
    gap = _zero_ablation_increase(r)
    if gap is None:
        return
    r["ce_loss_zero_ablation_increase"] = gap
    if "ce_loss_increase" not in r and isinstance(r.get("ce_loss_spliced"), (int, float)):
        r["ce_loss_increase"] = r["ce_loss_spliced"] - r["ce_loss_clean"]
    r["ce_loss_recovered_min_increase"] = min_increase
    r["ce_loss_recovered_reliable"] = bool(math.isfinite(gap) and gap >= min_increase)


def recovered_cell(r: dict[str, Any], fmt: str = "{:.1%}") -> str | None:
    """The CE-recovered cell of a table: the percentage, or the flag when it is ill-conditioned."""
    v = r.get("ce_loss_recovered")
    if r.get("ce_loss_recovered_reliable") is False:
        return FLAG
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return fmt.format(v)


def conditioning_notes(results: list[dict[str, Any]], min_increase: float) -> list[str]:
    """One footnote line when some row shows the flag."""
    low = [r["name"] for r in results if r.get("ce_loss_recovered_reliable") is False]
    if not low:
        return []
    return [
        f"{FLAG}: zero-ablating the site raises CE by less than {min_increase:g} nats for {', '.join(low)}, "
        "so CE recovered is ill-conditioned there; compare the CE increase (nats) and KL instead"
    ]
