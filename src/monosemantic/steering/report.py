"""A steering evaluation as a table on stdout, a JSON file and a plot (concept rate and fluency
against the steering value)."""

from __future__ import annotations

import math
from pathlib import Path

from monosemantic.utils.files import atomic_path, write_json_atomic
from monosemantic.utils.format import percent

from .measure import SteeringEvaluation

EXAMPLE_CHARS = 160  # characters of the first sample shown per row


def print_evaluation(ev: SteeringEvaluation) -> None:
    """One row per arm: value, samples, concept rate, appearances per 100 tokens, fluency, an example."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    scale = "" if ev.max_activation is None else f", max activation {ev.max_activation:.3g}"
    table = Table(
        title=f"steering: {ev.mode} feature {ev.feature} of {Path(ev.dictionary).name} at {ev.site}{scale}",
        caption=f"concept = {ev.concept_kind}: {', '.join(repr(t) for t in ev.concept) or '(none)'}; "
        f"loss = the plain model's nats per generated token (fluency, lower is better); "
        f"{ev.arms[0].samples.__len__()} samples per row, temperature {ev.sampling['temperature']:g}, "
        f"top-p {ev.sampling['top_p']:g}, seed {ev.sampling['seed']}",
        show_lines=True,
        expand=True,
    )
    for name, justify in (("value", "left"), ("concept rate", "right"), ("per 100 tok", "right"),
                          ("loss", "right"), ("tokens", "right")):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("first sample", ratio=1)
    for a in ev.arms:
        example = a.texts[0] if a.texts else ""
        example = example if len(example) <= EXAMPLE_CHARS else example[: EXAMPLE_CHARS - 1] + "…"
        table.add_row(
            a.label,
            percent(a.concept_rate),
            f"{a.concept_per_100:.1f}",
            "–" if a.loss is None else f"{a.loss:.2f}",
            f"{a.mean_tokens:.1f}",
            Text(ev.prompt, style="dim") + Text(example, style="bold"),
        )
    Console(width=max(Console().width, 120)).print(table)


def write_evaluation(ev: SteeringEvaluation, out: Path, plot: bool) -> list[Path]:
    """`steer-<dictionary>-f<feature>.json` (every sample, every number) and, with `plot`, `.png`."""
    stem = f"steer-{Path(ev.dictionary).name}-f{ev.feature}-{ev.mode}"
    written = [out / f"{stem}.json"]
    write_json_atomic(written[0], ev.as_dict())
    if plot and len(ev.arms) > 1:
        written.append(plot_evaluation(ev, out / f"{stem}.png"))
    return written


def plot_evaluation(ev: SteeringEvaluation, path: Path) -> Path:
    """Concept rate (left axis) and loss (right axis) against the value; the plain text at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = all(a.multiple is not None for a in ev.arms[1:])
    xs = [0.0] + [(a.multiple if units else a.value) or 0.0 for a in ev.arms[1:]]
    if ev.mode == "ablate":
        xs = [0.0, 1.0]
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    rate = [100 * ev.arms[i].concept_rate for i in order]
    ax.plot([xs[i] for i in order], rate, "o-", color="#d9480f", label="concept rate")
    ax.set_ylabel("samples with the concept (%)", color="#d9480f")
    ax.set_ylim(-3, 103)
    xlabel = "ablated (1) vs plain (0)" if ev.mode == "ablate" else (
        "value (x the feature's max activation)" if units else "value (raw activation)")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax2 = ax.twinx()
    loss = [ev.arms[i].loss for i in order]
    ax2.plot([xs[i] for i, v in zip(order, loss, strict=True) if v is not None and math.isfinite(v)],
             [v for v in loss if v is not None and math.isfinite(v)], "s--", color="#364fc7", label="loss")  # fmt: skip
    ax2.set_ylabel("plain model's loss on the text (nats/token)", color="#364fc7")
    ax.set_title(f"{ev.mode} feature {ev.feature} of {Path(ev.dictionary).name}", fontsize=10)
    ax.grid(True, alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
