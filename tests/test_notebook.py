"""notebooks/course_lab.ipynb runs headless (nbclient + ipykernel, test-only dependencies) and
its outputs hold the lab's numbers: the demo network standing in for the course's AlexNet."""

from __future__ import annotations

import base64
import json
import re

import cv2
import numpy as np
import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "course_lab.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 10
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    out = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    env = {"EXPLAIN_NOTEBOOK_OUT": str(out), "EXPLAIN_NOTEBOOK_DEMO": "1",
           "OMP_NUM_THREADS": "1"}  # one torch thread in the kernel, as in this process
    with pytest.MonkeyPatch.context() as mp:  # the kernel inherits the environment
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("PYTHONPATH", str(REPO))
        nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return nb, out


def _text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def _number(text: str, pattern: str) -> float:
    found = re.findall(pattern, text)
    assert found, pattern
    return float(found[-1])


def test_notebook_outputs_hold_the_labs_numbers(executed):
    nb, out = executed
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error"]
    text = _text(nb)
    assert "config demo_catdog.yaml, layer backbone._blocks.15" in text
    assert _number(text, r"p\(cat \| cat\.jpg\) = ([\d.]+)") > 0.9
    assert _number(text, r"p\(dog \| dog\.jpg\) = ([\d.]+)") > 0.9
    for method in ("gradcam", "layercam"):
        left = method + r": cat map mass in the left half of both\.jpg = ([\d.]+)"
        assert _number(text, left) > 0.7
        assert _number(text, method + r": .* dog map mass in the right half = ([\d.]+)") > 0.7
    assert "320 channels of 7 x 14" in text
    assert _number(text, r"channel terms summed vs the gradcam map: max \|difference\| = "
                         r"([\d.e+-]+)") < 1e-5
    assert len(re.findall(r"max \|hand-written - library\| = ", text)) == 12
    assert _number(text, r"largest difference over all 12 maps: ([\d.e+-]+)") < 1e-4
    assert _number(text, r"maps of the run vs explain.cam: max \|difference\| = "
                         r"([\d.e+-]+)") < 1e-6
    assert _number(text, r"xgradcam: cat map mass in the left half of both\.jpg = ([\d.]+)") > 0.5
    page = (out / "course_lab" / "report.html").read_text()  # its own folder, replaced
    assert 'CAM study <span class="run-name">course_lab</span>' in page
    assert "gradcam, layercam" in page
    assert not (out / "demo_catdog").exists()  # the config's own folder is left alone
    errors = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.output_type == "stream" and o.name == "stderr")
    assert "CAMs: 100%" in errors  # the run's bar: text, without ipywidgets
    assert "Warning" not in errors and "ipywidgets" not in errors, errors


def test_notebook_displays_are_self_contained(executed):
    nb, out = executed
    html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("execute_result", "display_data") and "text/html" in o["data"]]
    pictures = [src for page in html for src in re.findall(r'<img src="([^"]+)"', page)]
    assert len(pictures) >= 3 * 5 + 3 + 2  # cam overlays, channel grids, the run's panels
    for src in pictures:
        assert src.startswith("data:image/")
        data = base64.b64decode(src.split(",", 1)[1])
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    assert any("<iframe" in page and "report.html" in page for page in html)
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if "image/png" in o.get("data", {})]
    assert figures  # study.show(...)
