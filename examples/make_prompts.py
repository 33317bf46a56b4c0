"""Write examples/prompts.txt: 50 held-out storyworld prompts of five task types, for
`monosemantic circuit CONFIG --prompts examples/prompts.txt`.

Stories come from storyworld seed 7: the shipped LM was trained on seed 0 (validated on seed
1000003) and `configs/demo.toml` harvests seed 0, so none of these stories was seen by the LM or by
a dictionary. Each prompt is a story cut just before a word the task needs, so the next-token
prediction the graph explains is that word:
- pronoun: a subject pronoun referring to a character named earlier ("... went to the beach. She");
- colour: a colour said earlier in the story (recall);
- object: an object said earlier (recall);
- place: the place said earlier (recall);
- number: a number word (counting).
Ten prompts per task: the first stories (in order) whose cut point lies within `MAX_CHARS`
characters, at most one prompt per story. Rerun with `.venv/bin/python examples/make_prompts.py`.
"""

from __future__ import annotations

from pathlib import Path

from monosemantic.corpus.storyworld import make_story

SEED = 7
PER_TASK = 10
MAX_CHARS = 160
TASKS = {
    "pronoun": lambda c, seen: c == "syntax:subject_pronoun",
    "colour": lambda c, seen: c.startswith("colour:") and c in seen,
    "object": lambda c, seen: c.startswith("object:") and c in seen,
    "place": lambda c, seen: c.startswith("place:") and c in seen,
    "number": lambda c, seen: c == "number",
}


def prompts() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {task: [] for task in TASKS}
    index = 0
    while any(len(v) < PER_TASK for v in out.values()):
        story = make_story(SEED, index)
        index += 1
        seen: set[str] = set()
        for span in story.spans:
            task = next((t for t, want in TASKS.items() if want(span.concept, seen)), None)
            text = story.text[: span.start].rstrip()
            if task and len(out[task]) < PER_TASK and 20 <= span.start <= MAX_CHARS and '"' not in text[-2:]:
                out[task].append(text)
                break
            seen.add(span.concept)
    return out


def main() -> None:
    lines = [
        "# 50 held-out storyworld prompts (storyworld seed 7, unseen by the shipped LM and the demo),",
        "# written by examples/make_prompts.py. `[task]` lines name the task of the prompts below them;",
        "# `#` lines are comments; every other line is one prompt.",
    ]
    for task, items in prompts().items():
        lines += ["", f"[{task}]", *items]
    Path(__file__).with_name("prompts.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
