"""Every config example in README.md and docs/*.md works as printed, up to the model.

Each fenced ```yaml block of those pages is one example. It is written as configs/example.yaml
in a fresh folder where every path it names exists (small photos where it names images,
folders and globs; a class tree, CSV or JSON list where it names a labelled dataset; a tiny
model file where it names one). A block without a ``model:`` key is a fragment: it is checked
merged over a minimal config (that model file, ``target_layers: [auto]``, one photo), its own
keys winning. Each example must then

- load with ``explain.config.load_config`` (the schema: keys, types, ranges),
- find at least one image with ``explain.images.find_images``, and
- pass the planning check ``explain.plan.slot_targets`` (targets against the images' labels),

which is everything a run checks before it loads the model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import pytest
import torch
import yaml

import explain
from explain.config import load_config
from explain.errors import ExplainError
from explain.images import find_images
from explain.plan import slot_targets
from conftest import IMAGES
from helpers import tiny_net

CODE = Path(explain.__file__).resolve().parent.parent  # the copy under test
PAGES = [CODE / "README.md", *sorted((CODE / "docs").glob("*.md"))]
FRAGMENT_BASE = {"model": {"file": "../models/tiny.pth"}, "target_layers": ["auto"],
                 "methods": ["gradcam"], "images": ["../images/cat.jpg"]}
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# README section -> (the error its example stops with today, why). The test checks that very
# error and reports the example as xfailed; once the example works it fails ("DID NOT RAISE"):
# then remove the entry.
KNOWN_FAILURES: dict[str, tuple[str, str]] = {}  # section -> (error, why); none today


def yaml_examples(text: str) -> list[tuple[str, str]]:
    """(the '#' or '##' heading it stands under, its text) of every ```yaml block."""
    found, section, block, fenced = [], "", None, False
    for line in text.splitlines():
        if block is not None:
            if line.strip() == "```":
                found.append((section, "\n".join(block)))
                block = None
            else:
                block.append(line)
        elif line.startswith("```"):  # another fence: its '# ' lines are no headings
            if re.fullmatch(r"```ya?ml\s*", line) and not fenced:
                block = []
            else:
                fenced = not fenced
        elif not fenced and re.match(r"##? ", line):
            section = line.lstrip("#").strip()
    return found


EXAMPLES = [example for page in PAGES for example in yaml_examples(page.read_text("utf-8"))]


def picture(path: Path, source: str = "cat.jpg") -> None:
    """A small photo at ``path``, in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.resize(cv2.imread(str(IMAGES / source)), (48, 32))), path


def plain_images(folder: Path, entry: str) -> None:
    """What a plain ``images`` entry names: a file, a folder with a photo, a glob's match."""
    path = folder / entry
    if "*" in entry or "?" in entry:
        picture(Path(str(path).replace("**/", "").replace("*", "x").replace("?", "x")))
    elif path.suffix.lower() in PICTURE_SUFFIXES:
        picture(path)
    else:
        picture(path / "inside.jpg")


def labelled_images(folder: Path, entry: dict, classes: list[str]) -> None:
    """What a labelled entry names: a class tree, or a CSV / JSON list of its class photos."""
    path = folder / entry["labelled"]
    rows = [(f"{path.stem}_{name}.jpg", name) for name in classes]
    for rel, name in rows:
        if path.suffix in (".csv", ".json"):
            picture(path.parent / rel, f"{name}.jpg" if name in ("cat", "dog") else "cat.jpg")
        else:
            picture(path / name / rel)
    if path.suffix == ".csv":
        path.write_text("path,label\n" + "".join(f"{r},{n}\n" for r, n in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps([{"path": r, "label": n} for r, n in rows]))
    elif entry.get("skip_unknown"):
        picture(path / "not_a_class" / "other.jpg")  # what skip_unknown is there for


def provide(folder: Path, data: dict) -> None:
    """Every file the config in ``folder`` names: model file, images."""
    model_file = (data.get("model") or {}).get("file")
    if model_file:
        (folder / model_file).parent.mkdir(parents=True, exist_ok=True)
        torch.save(tiny_net(), folder / model_file)
    classes = list(data.get("classes") or {"cat": 0, "dog": 1})
    for entry in data.get("images") or []:
        if isinstance(entry, dict):
            labelled_images(folder, entry, classes)
        else:
            plain_images(folder, entry)


def checked(folder: Path, text: str) -> None:
    """The example ``text`` as configs/example.yaml in ``folder``, with the files it names,
    through every check before the model (see the module's docstring)."""
    data = yaml.safe_load(text)
    assert isinstance(data, dict), text
    if "model" not in data:  # a fragment: checked on top of a minimal config
        data = {**FRAGMENT_BASE, **data}
        text = yaml.safe_dump(data)
    configs = folder / "configs"
    configs.mkdir()
    provide(configs, data)
    path = configs / "example.yaml"
    path.write_text(text, encoding="utf-8")  # a whole example: as printed
    cfg = load_config(path)
    refs, notes = find_images(cfg)
    assert refs, notes
    slot_targets(cfg, refs)


def test_the_readme_has_its_config_examples():
    sections = [section for section, _ in EXAMPLES]
    assert "The experiment file" in sections and "Labelled datasets" in sections, sections
    assert len(PAGES) >= 10 and len(EXAMPLES) >= 6, (PAGES, len(EXAMPLES))
    assert set(KNOWN_FAILURES) <= set(sections)


@pytest.mark.parametrize("section, text", EXAMPLES,
                         ids=[f"{i}-{section}" for i, (section, _) in enumerate(EXAMPLES)])
def test_readme_config_example_is_valid(tmp_path, section, text):
    if section not in KNOWN_FAILURES:
        checked(tmp_path, text)
        return
    error, why = KNOWN_FAILURES[section]
    with pytest.raises(ExplainError, match=error):
        checked(tmp_path, text)
    pytest.xfail(why)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_pages_reaches_its_file_and_heading():
    """The README was split into docs/ pages: each relative link names a file that exists
    and, after '#', a heading of that file."""
    anchors = {page.resolve(): {slug(line.lstrip("#")) for line in page.read_text("utf-8")
                                .splitlines() if re.match(r"#{1,4} ", line)} for page in PAGES}
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text("utf-8")):
            if re.match(r"[a-z]+:", target):  # https: and the like
                continue
            name, _, anchor = target.partition("#")
            path = (page.parent / name).resolve() if name else page.resolve()
            assert path.exists(), (page.name, target)
            if anchor:
                assert anchor in anchors[path], (page.name, target)
            checked += 1
    assert checked >= 30
