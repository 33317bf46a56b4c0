"""examples/walkthrough.ipynb runs top to bottom on CPU in under two minutes (`pytest -k walkthrough`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _execute(name: str, work: Path, timeout: int) -> tuple[object, float]:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    env = {"WALKTHROUGH_DIR": str(work), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        start = time.perf_counter()
        nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(work)}}
        ).execute()
        return nb, time.perf_counter() - start
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            data = out.get("data", {})
            text.append(data.get("text/plain", ""))
            text.append(data.get("text/html", ""))
    return "\n".join(text)


def test_walkthrough_notebook_executes(tmp_path):
    nb, seconds = _execute("walkthrough.ipynb", tmp_path, timeout=240)
    # its speed (about 100 s on 2 CPU cores) is stated in docs/python.md, not asserted: a loaded
    # machine must not fail a correct notebook
    print(f"walkthrough executed in {seconds:.0f}s")
    graph = json.loads((tmp_path / "circuit" / "graph.json").read_text())
    assert any(n["feature_type"] == "cross layer transcoder" for n in graph["nodes"])
    assert (tmp_path / "features.db").is_file()
    out = _outputs(nb)
    assert "with the SAE spliced in" in out
    assert out.count("<iframe srcdoc=") == 2  # the feature dashboard and the graph viewer, inline
    assert "Traceback" not in out


@pytest.mark.slow
def test_your_model_notebook_executes(tmp_path):
    """examples/your_model.ipynb, on its local stand-ins for a user's model and text."""
    nb, _ = _execute("your_model.ipynb", tmp_path, timeout=300)
    out = _outputs(nb)
    assert "L0 per token" in out and "<iframe srcdoc=" in out and "Traceback" not in out
    assert (tmp_path / "features.db").is_file()
