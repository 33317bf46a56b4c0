"""`monosemantic circuit CONFIG --prompts FILE`: graph scores over a set of prompts, per dictionary set.

A claim such as "the CLT explains more of the model than per-layer transcoders" rests on one
prompt when it is read off one graph (on two prompts of our own the order flipped). Here every
prompt of the file is traced with every dictionary set (`[circuit].sets`: name -> checkpoint
folders, e.g. per-layer transcoders, a CLT, later a complete replacement model; default: the
dictionaries `circuit` would use), and each set gets the mean and 95% interval (Student t over
prompts) of the replacement score, the completeness score and the ablation faithfulness of the
pruned graph (prompts where that ratio is ill-conditioned are left out and counted). Sets are
also compared pairwise on the same prompts: the mean paired difference with its interval, and a
difference whose interval contains 0 is reported as no difference.

The prompts file: one prompt per line; `#` lines are comments; a `[task]` line names the task of
the prompts below it (reported per task in `summary.json`). Outputs in `circuit.out/prompt_sets/`:
`scores.csv` (one row per set and prompt), `summary.json`, `summary.md`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

from monosemantic.config import Config
from monosemantic.evaluation.intervals import seed_interval
from monosemantic.utils.errors import ConfigError
from monosemantic.utils.files import check_output, write_json_atomic, write_text_atomic
from monosemantic.utils.progress import console, progress_bar

from .attribution import attribute
from .faithfulness import ablation_faithfulness, feature_means, graph_scores
from .pruning import prune
from .replacement import ReplacementModel

METRICS = (
    ("replacement_score", "replacement"),
    ("completeness_score", "completeness"),
    ("ablation_faithfulness", "faithfulness"),
)


def read_prompts(path: str | Path) -> list[tuple[str, str]]:
    """(task, prompt) pairs of a prompts file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--prompts {str(path)!r} is not a file; give a text file with one prompt per line")
    task, out = "prompt", []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            task = line[1:-1].strip() or "prompt"
            continue
        out.append((task, line))
    if not out:
        raise ConfigError(f"{path} holds no prompt (every line is empty, a comment or a [task] header)")
    return out


def dictionary_sets(cfg: Config) -> dict[str, list[Path]]:
    """name -> checkpoint folders: `[circuit].sets` (a set with a folder missing is skipped with a
    note naming it), else the one set `circuit` uses by default."""
    from monosemantic.dictionaries.io import find_dictionaries

    from .run import resolve_dictionaries

    if not cfg.circuit.sets:
        return {"dictionaries": resolve_dictionaries(cfg)}
    sets: dict[str, list[Path]] = {}
    for name, folders in cfg.circuit.sets.items():
        missing = [str(f) for f in folders if not Path(f).exists()]
        if missing:  # not trained yet (the CLT, the Lorsas), or a wrong path: said, never guessed around
            console.print(
                f"[yellow]note:[/] dictionary set {name!r} skipped: {', '.join(missing)} does not exist "
                "(train it first, or fix the path)",
                highlight=False,
                soft_wrap=True,
            )
            continue
        sets[name] = [p for f in folders for p in find_dictionaries(Path(f))]
    if not sets:
        raise ConfigError("no dictionary set of circuit.sets exists yet; train one of them first")
    return sets


def _score(cfg: Config, rm: ReplacementModel, prompt: str, means: Any) -> dict[str, Any]:
    """The attribution graph of one prompt, pruned, with its three scores."""
    c = cfg.circuit
    t0 = time.perf_counter()
    graph = attribute(rm, prompt=prompt, target=c.target, target_token=c.target_token,
                      contrast_token=c.contrast_token, target_feature=c.target_feature,
                      max_logit_prob=c.max_logit_prob, max_n_logits=c.max_n_logits,
                      max_feature_nodes=c.max_feature_nodes, batch_size=c.batch_size)  # fmt: skip
    pruned = prune(graph, c.node_threshold, c.edge_threshold)
    replacement, completeness = graph_scores(graph)
    faith = ablation_faithfulness(rm, graph, pruned.node_mask, means)
    return {
        "replacement_score": replacement,
        "completeness_score": completeness,
        "ablation_faithfulness": faith["ablation_faithfulness"],
        "n_nodes": int(pruned.node_mask.sum()),
        "active_features": graph.total_active_features,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, 95% interval and count of each score over `rows` (None scores left out)."""
    out: dict[str, Any] = {"n_prompts": len(rows)}
    for key, _ in METRICS:
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        mean, ci = seed_interval(vals)
        out[key] = {"mean": mean if vals else None, "ci95": ci, "n": len(vals)}
    return out


def _paired(rows: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """Mean difference b - a over the prompts both scored, with its 95% interval."""
    by = {(r["set"], r["index"]): r for r in rows}
    out: dict[str, Any] = {}
    for key, _ in METRICS:
        diffs = [
            by[(b, i)][key] - by[(a, i)][key]
            for (s, i) in by
            if s == a and (b, i) in by and by[(a, i)][key] is not None and by[(b, i)][key] is not None
        ]
        mean, ci = seed_interval(diffs)
        verdict = "no difference (interval contains 0)" if ci is None or ci[0] <= 0 <= ci[1] else (
            f"{b} higher" if mean > 0 else f"{a} higher")  # fmt: skip
        out[key] = {"mean": mean if diffs else None, "ci95": ci, "n": len(diffs), "verdict": verdict}
    return out


def _fmt(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "–"
    ci = s["ci95"]
    return f"{s['mean']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{s['mean']:.3f}"


def _markdown(summary: dict[str, Any], n_prompts: int, prompts: str) -> str:
    lines = [
        f"Graph scores over {n_prompts} prompts of {prompts}: mean [95% interval] (Student t over prompts); "
        "faithfulness leaves out prompts where it is ill-conditioned (n given).",
        "",
        "| dictionary set | dictionaries | " + " | ".join(h for _, h in METRICS) + " | faithfulness n |",
        "|---|---:|" + "---|" * len(METRICS) + "---:|",
    ]
    for name, s in summary["sets"].items():
        cells = [_fmt(s[key]) for key, _ in METRICS]
        lines.append(
            f"| {name} | {s['n_dictionaries']} | "
            + " | ".join(cells)
            + f" | {s['ablation_faithfulness']['n']} |"
        )
    for pair, d in summary["paired"].items():
        lines.append("")
        lines.append(f"{pair} (paired over the same prompts): " + "; ".join(
            f"{h} {_fmt(d[key])} — {d[key]['verdict']}" for key, h in METRICS))  # fmt: skip
    return "\n".join(lines) + "\n"


def trace_prompts(cfg: Config, prompts_file: str | Path) -> Path:
    """Trace every prompt of `prompts_file` with every dictionary set; write and print the table."""
    from monosemantic.dictionaries.io import dictionary_names, load_dictionary
    from monosemantic.lm.model import load_model

    c = cfg.circuit
    if c.method != "attribution":
        raise ConfigError(
            f"--prompts traces attribution graphs; circuit.method is {c.method!r} (set it to attribution)"
        )
    prompts = read_prompts(prompts_file)
    out = Path(c.out) / "prompt_sets"
    check_output(out, "circuit.out")
    sets = dictionary_sets(cfg)
    model = load_model(cfg.model.name, dtype=cfg.model.dtype, device=c.device, revision=cfg.model.revision)
    rows: list[dict[str, Any]] = []
    with progress_bar() as bar:
        task = bar.add_task("prompts", total=len(prompts) * len(sets), unit="graph", info="")
        for set_name, paths in sets.items():
            dics = [load_dictionary(p, device=str(model.device)) for p in paths]
            rm = ReplacementModel(model, dics, dictionary_names(paths), zero_bos=c.zero_bos)
            means = (
                feature_means(rm, cfg.analyze.cache or cfg.harvest.out, c.mean_sequences)
                if c.ablation == "mean"
                else None
            )
            for i, (kind, prompt) in enumerate(prompts):
                bar.update(task, info=f"{set_name} {i + 1}/{len(prompts)}")
                rows.append({"set": set_name, "index": i, "task": kind, "prompt": prompt,
                             **_score(cfg, rm, prompt, means)})  # fmt: skip
                bar.advance(task)
    names = list(sets)
    summary: dict[str, Any] = {"prompts": str(prompts_file), "n_prompts": len(prompts),
                               "ablation": "mean" if c.ablation == "mean" else "zero", "sets": {}, "paired": {}}  # fmt: skip
    for name in names:
        mine = [r for r in rows if r["set"] == name]
        summary["sets"][name] = {"n_dictionaries": len(sets[name]), "folders": [str(p) for p in sets[name]],
                                 **_summary(mine),
                                 "by_task": {t: _summary([r for r in mine if r["task"] == t])
                                             for t in dict.fromkeys(r["task"] for r in mine)}}  # fmt: skip
    for j, b in enumerate(names[1:], 1):
        summary["paired"][f"{b} - {names[0]}"] = _paired(rows, names[0], b)
        del j
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "scores.csv", buf.getvalue())
    write_json_atomic(out / "summary.json", summary)
    text = _markdown(summary, len(prompts), str(prompts_file))
    write_text_atomic(out / "summary.md", text)
    _print(summary, len(prompts), str(prompts_file))
    return out


def _print(summary: dict[str, Any], n_prompts: int, prompts: str) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"Graph scores over {n_prompts} prompts (mean [95% interval])", box=box.SIMPLE_HEAD)
    for h in ("dictionary set", *(h for _, h in METRICS), "faith. n"):
        table.add_column(h, justify="left" if h == "dictionary set" else "right")
    for name, s in summary["sets"].items():
        table.add_row(name, *(_fmt(s[key]) for key, _ in METRICS), str(s["ablation_faithfulness"]["n"]))
    console.print(table)
    for pair, d in summary["paired"].items():
        console.print(f"{pair}: " + "; ".join(f"{h} {_fmt(d[key])}: {d[key]['verdict']}" for key, h in METRICS),
                      highlight=False, soft_wrap=True)  # fmt: skip
