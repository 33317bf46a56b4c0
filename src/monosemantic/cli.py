"""The `monosemantic` command: one thin function per verb; the work lives in the stage modules.

Every verb takes a TOML config path and `--set section.key=value` overrides.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.markup import escape

from monosemantic.config import Config, load_config
from monosemantic.config.loading import validation_message
from monosemantic.utils.disk import is_disk_full
from monosemantic.utils.distributed import launched
from monosemantic.utils.errors import MonosemanticError
from monosemantic.utils.progress import console

CHAT_HELP = (
    "A chat prompt instead of --prompt: a JSON list of {role, content}, lines 'user: ...' / 'assistant: ...', "
    "or a .json/.jsonl/.txt file of either; rendered with the model's chat template (docs/chat.md)."
)

app = typer.Typer(
    name="monosemantic",
    help="Sparse dictionary learning on language models, and circuit discovery with it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
lm_app = typer.Typer(help="Train a small causal LM and its tokenizer.", no_args_is_help=True)
app.add_typer(lm_app, name="lm")

ConfigArg = Annotated[Path, typer.Argument(help="TOML config file (e.g. configs/demo.toml).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a config value: section.key=value (repeatable)."
    ),
]

F = TypeVar("F", bound=Callable[..., Any])
# Verbs that split their work over the ranks torchrun starts (docs/scaling.md).
DISTRIBUTED_VERBS = {"harvest", "train", "evaluate", "analyze"}


def friendly_errors(fn: F) -> F:
    """Bad input ends in one red line naming the problem, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if launched() and fn.__name__ not in DISTRIBUTED_VERBS:
            console.print(
                f"[bold red]error:[/] `{fn.__name__}` runs in one process; launch it without torchrun "
                f"(torchrun runs {', '.join(sorted(DISTRIBUTED_VERBS))})",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
        try:
            with _sigterm_unwinds():
                return fn(*args, **kwargs)
        except MonosemanticError as e:
            _error(str(e))
        except ValidationError as e:  # e.g. an invalid --mode assigned onto a config section
            _error(validation_message(e))
        except OSError as e:  # the file system refused (disk full, permissions): not a bug to trace
            where = f" ({e.filename})" if e.filename else ""
            _error(f"{e.strerror or e}{where}")
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: run the same command again to resume.")
            raise typer.Exit(130) from None
        except Exception as e:  # a full disk in a write no guard wraps (SQLite, safetensors)
            if not is_disk_full(e):
                raise
            _error(f"disk full ({str(e).splitlines()[0]}); free space and run the same command again")

    return wrapper  # type: ignore[return-value]


def _error(message: str) -> NoReturn:
    """Print `message` as one red line (inner newlines folded) and exit with status 2."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into SystemExit(143) while a verb runs, so `finally` blocks remove temporaries
    (a killed `analyze` would otherwise leave `.features.db.tmp-PID` behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _config(path: Path, overrides: list[str] | None) -> Config:
    return load_config(path, overrides or [])


@lm_app.command("train")
@friendly_errors
def lm_train(config: ConfigArg, set_: SetOpt = None) -> None:
    """Train a BPE tokenizer and a small transformers causal LM on [data].text ([lm] section), or
    fine-tune an existing one (lm.init_from)."""
    cfg = _config(config, set_)
    from monosemantic.lm.training import train_lm

    out = train_lm(cfg)
    console.print(f"model saved to [bold]{out}[/]")


@app.command()
@friendly_errors
def harvest(config: ConfigArg, set_: SetOpt = None) -> None:
    """Capture [sites] activations of [model] on [data] into an activation cache ([harvest].out)."""
    cfg = _config(config, set_)
    from monosemantic.activations.harvest import harvest as run

    out = run(cfg)
    console.print(f"activation cache at [bold]{out}[/]")


@app.command()
@friendly_errors
def train(config: ConfigArg, set_: SetOpt = None) -> None:
    """Train the [dictionary] (or every [[dictionaries]] entry at once) on one activation stream."""
    cfg = _config(config, set_)
    from monosemantic.training.trainer import train as run

    outs = run(cfg)
    for out in outs:
        console.print(f"dictionary saved to [bold]{out}[/]")


@app.command()
@friendly_errors
def plan(
    config: ConfigArg,
    set_: SetOpt = None,
    world_size: Annotated[
        int | None,
        typer.Option(
            help="Ranks to plan for (torchrun --nproc-per-node x nodes; default [plan].world_size)."
        ),
    ] = None,
    circuit_tokens: Annotated[
        int | None,
        typer.Option(
            min=1, help="Prompt length of the circuit memory estimate (default [plan].circuit_tokens)."
        ),
    ] = None,
) -> None:
    """Memory per rank, cache disk and FLOPs per token of each stage, before starting a job."""
    cfg = _config(config, set_)
    from monosemantic.training.plan import plan as run
    from monosemantic.training.plan import plan_lines

    for line in plan_lines(run(cfg, world_size=world_size, circuit_tokens=circuit_tokens)):
        print(line)


@app.command()
@friendly_errors
def evaluate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Reconstruction, sparsity and spliced-model metrics for a checkpoint or sweep folder."""
    cfg = _config(config, set_)
    from monosemantic.evaluation.run import evaluate as run

    run(cfg)


@app.command()
@friendly_errors
def compare(
    config: ConfigArg,
    set_: SetOpt = None,
    blind_: Annotated[tuple[str, str] | None, typer.Option("--blind", hidden=True)] = None,
    unblind_: Annotated[bool, typer.Option("--unblind", hidden=True)] = False,
) -> None:
    """A table and plots across the dictionaries of a run (after evaluate)."""
    if blind_ is not None:
        _error(
            "compare --blind is now its own verb: monosemantic blind CONFIG A B [--judge offline|endpoint]"
        )
    if unblind_:
        _error("compare --unblind is now its own verb: monosemantic unblind CONFIG")
    cfg = _config(config, set_)
    from monosemantic.evaluation.compare import compare as run

    console.print(f"comparison written to [bold]{run(cfg, console=console)}[/]")


@app.command()
@friendly_errors
def blind(
    config: ConfigArg,
    dictionaries: Annotated[
        list[str] | None,
        typer.Argument(
            help="The two dictionaries to rate, A B (default [compare].blind).",
            show_default=False,
            metavar="A B",
        ),
    ] = None,
    set_: SetOpt = None,
    judge: Annotated[
        str | None, typer.Option(help="Who rates: human | offline | endpoint (default [compare].judge).")
    ] = None,
    features: Annotated[
        int | None, typer.Option(help="Features per dictionary (default [compare].features).")
    ] = None,
) -> None:
    """Blind rating of two dictionaries' features: items to rate, ratings.csv, and a hidden key."""
    cfg = _config(config, set_)
    if dictionaries:
        if len(dictionaries) != 2:
            _error(f"blind takes two dictionaries, A B (got {len(dictionaries)}: {' '.join(dictionaries)})")
        cfg.compare.blind = (dictionaries[0], dictionaries[1])
    if judge is not None:
        cfg.compare.judge = judge  # type: ignore[assignment]
    if features is not None:
        cfg.compare.features = features
    from monosemantic.evaluation.blind import blind as run

    folder = run(cfg)
    console.print(
        f"blind items in [bold]{folder / 'items.md'}[/]; rate them in ratings.csv, then "
        f"`monosemantic unblind {config}`"
    )


@app.command()
@friendly_errors
def unblind(config: ConfigArg, set_: SetOpt = None) -> None:
    """Score a blind rating against its key: each dictionary's mean rating with its 95% interval."""
    cfg = _config(config, set_)
    from monosemantic.evaluation.blind import unblind as run
    from monosemantic.evaluation.compare import compare_folder

    result = run(cfg)
    for name, r in result["dictionaries"].items():
        console.print(f"{name}: mean rating {r['mean']} (95% CI {r['ci95']}, n={r['n']})", highlight=False)
    console.print(f"result written to [bold]{compare_folder(cfg) / 'blind' / 'result.json'}[/]")


@app.command()
@friendly_errors
def analyze(config: ConfigArg, set_: SetOpt = None) -> None:
    """One pass over the cache: top examples, quantiles, densities, logit lens -> features.db."""
    cfg = _config(config, set_)
    from monosemantic.analysis.run import analyze as run

    out = run(cfg)
    console.print(f"feature store at [bold]{out}[/]")


@app.command()
@friendly_errors
def explain(config: ConfigArg, set_: SetOpt = None) -> None:
    """Explain and score features (an OpenAI-compatible endpoint, or the offline explainer)."""
    cfg = _config(config, set_)
    from monosemantic.explanation.run import explain as run

    run(cfg)


@app.command()
@friendly_errors
def export(
    config: ConfigArg,
    set_: SetOpt = None,
    html: Annotated[Path | None, typer.Option(help="Write a static dashboard site here.")] = None,
    neuronpedia: Annotated[Path | None, typer.Option(help="Write Neuronpedia feature JSON here.")] = None,
) -> None:
    """Export the feature store as a static HTML dashboard and/or Neuronpedia JSON."""
    cfg = _config(config, set_)
    from monosemantic.exports.run import export as run

    if html is not None:
        cfg.export.html = html
    if neuronpedia is not None:
        cfg.export.neuronpedia = neuronpedia
    run(cfg)


@app.command()
@friendly_errors
def steer(
    config: ConfigArg,
    feature: Annotated[int | None, typer.Option(help="Feature index to steer with (steer.feature).")] = None,
    prompt: Annotated[str | None, typer.Option(help="Text to continue (steer.prompt).")] = None,
    chat: Annotated[str | None, typer.Option(help=CHAT_HELP)] = None,
    value: Annotated[
        list[str] | None,
        typer.Option(
            help="Steering value, repeatable or comma-separated: raw (10) or a multiple of the feature's "
            "max activation (4x) (steer.values, default 4x)."
        ),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="add | set (or clamp) | scale | ablate (steer.mode).")
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="Generations per value and plain (steer.samples).")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy (steer.temperature).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass (steer.top_p).")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed (steer.seed).")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Tokens per generation (steer.max_new_tokens).")
    ] = None,
    word: Annotated[
        list[str] | None,
        typer.Option(help="Count this word instead of the feature's top tokens (steer.words)."),
    ] = None,
    dictionary: Annotated[
        Path | None, typer.Option(help="Checkpoint to steer with (steer.dictionary).")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Generate plain and with a feature edited, N samples per value; print how often the feature's
    concept appears and the text's fluency, and write the numbers and a plot."""
    cfg = _config(config, set_)
    from monosemantic.steering.run import steer as run

    given = {"feature": feature, "prompt": prompt, "values": value, "mode": mode, "samples": samples,
             "temperature": temperature, "top_p": top_p, "seed": seed, "max_new_tokens": max_new_tokens,
             "words": word, "dictionary": dictionary}  # fmt: skip
    for key, v in given.items():  # an option overrides its [steer] key (validated as the key is)
        if v is not None:
            setattr(cfg.steer, key, v)
    out = run(cfg, chat=chat)
    console.print(f"steering evaluation written to [bold]{out['files'][0]}[/]")


@app.command()
@friendly_errors
def circuit(
    config: ConfigArg,
    prompt: Annotated[str | None, typer.Option(help="Prompt to explain (default [circuit].prompt).")] = None,
    chat: Annotated[str | None, typer.Option(help=CHAT_HELP)] = None,
    corrupted: Annotated[
        str | None,
        typer.Option(help="Corrupted prompt for contrastive mode (sets circuit.method=contrastive)."),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="A prompts file: scores of every prompt per dictionary set (default [circuit].prompts)."
        ),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Attribution graph of features for a prompt, pruned and checked for faithfulness; with --prompts,
    graph scores over a prompt set, mean and 95% interval per dictionary set."""
    cfg = _config(config, set_)
    if corrupted is not None:
        cfg.circuit.corrupted_prompt = corrupted
        cfg.circuit.method = "contrastive"
    if prompts is not None or (prompt is None and chat is None and cfg.circuit.prompts is not None):
        from monosemantic.circuits.prompt_sets import trace_prompts

        out = trace_prompts(cfg, prompts if prompts is not None else cfg.circuit.prompts)
        console.print(f"prompt-set scores written to [bold]{out}[/]")
        return
    from monosemantic.circuits.run import circuit as run

    if prompt is not None:
        cfg.circuit.prompt, cfg.circuit.chat = prompt, None
    if chat is not None:
        cfg.circuit.chat = chat
    out = run(cfg)
    console.print(f"graph written to [bold]{out}[/]")


@app.command()
@friendly_errors
def serve(config: ConfigArg, set_: SetOpt = None) -> None:
    """Serve the feature store and graphs in the web viewer."""
    cfg = _config(config, set_)
    from monosemantic.server.app import serve as run

    try:
        run(cfg)
        code = 0
    except SystemExit as e:  # SIGTERM, which uvicorn re-raises once it has shut down: 143
        if e.code != 128 + signal.SIGTERM:
            raise  # it never started serving: exit as usual
        code = e.code
    except KeyboardInterrupt:  # Ctrl-C, re-raised by uvicorn likewise
        code = 128 + signal.SIGINT
    # Shut down: uvicorn has closed its connections and the app its store and worker. The console
    # entry (`main`) then skips the interpreter's teardown; an in-process caller keeps its own.
    _SERVED.append(code)
    if code:
        raise typer.Exit(code)


@app.command()
@friendly_errors
def demo(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="TOML config (default: the demo config shipped in the package, configs/demo.toml).",
            show_default=False,
        ),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """The embedded job on the shipped storyworld LM: harvest, train, evaluate, analyze, explain, export."""
    from monosemantic.demo import demo_config, run_demo

    path = config if config is not None else demo_config()
    run_demo(_config(path, set_), config_path=path)


def verbs() -> list[str]:
    """Every visible verb of the command, a sub-command's with its group (`lm train`), in the order
    `--help` lists them: what the tests and the manual enumerate instead of copying a list."""

    def walk(command: Any, prefix: str) -> list[str]:
        subs = getattr(command, "commands", None)  # a group (typer's TyperGroup) has sub-commands
        if subs is None:
            return [prefix]
        return [
            v for name, sub in subs.items() if not sub.hidden for v in walk(sub, f"{prefix} {name}".strip())
        ]

    return walk(typer.main.get_command(app), "")


_SERVED: list[int] = []  # the exit code of a `serve` that has shut down, for `main`


def main() -> None:  # pragma: no cover
    """The console entry. After `serve` has shut down it exits without the interpreter's teardown,
    which garbage-collects torch, transformers and a loaded model for seconds (over 10 s on a busy
    machine) when nothing is left to do. Only here: `app` called in-process (tests, notebooks) must
    return to its caller, never end the caller's process."""
    try:
        app()
    finally:
        if _SERVED:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(_SERVED[-1])


if __name__ == "__main__":  # pragma: no cover
    main()
