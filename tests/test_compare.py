"""Library maps vs hand-written references, the inplace-ReLU fix, external reference folders."""


import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from explain import compare, reference
from explain.config import load_config
from explain.runner import RunOptions, run
from explain.writers.summary import console_lines
from conftest import REPO

QUIET = dict(progress=False, log=lambda _: None)
REFERENCED = ["gradcam", "layercam", "gradcamplusplus"]


def course_run(course_tree, layer, **sets):
    overrides = {"target_layers": [layer], "methods": REFERENCED, "compare.enabled": True,
                 "compare.tolerance": 1e-5, "channels.enabled": False,
                 "preprocess.size": [112, 112], "metrics": [], **sets}  # small input: the same checks, faster
    cfg = load_config(course_tree / "configs" / "alexnet_catdog.yaml", overrides)
    summary = run(cfg, RunOptions(overwrite=True, **QUIET))
    compare_with.lines = console_lines(summary)
    return summary.compare


EXACT = ["gradcam", "layercam"]  # the library's formula is the paper's


@pytest.mark.parametrize("layer", ["features.10", "features.11"])
def test_library_matches_handwritten_on_inplace_alexnet(shared_course_tree, layer):
    result = course_run(shared_course_tree, layer)
    for method in REFERENCED:
        assert result["per_method"][method]["maps"] == 6  # 3 images x 2 classes
    for method in EXACT:
        assert result["per_method"][method]["max_abs"] <= 1e-5, method
        assert result["per_method"][method]["verdict"] == "agree"
        assert "note" not in result["per_method"][method]
    # Grad-CAM++: the library's 1e-6 in alpha's denominator outweighs the paper's formula on
    # this small random network's gradients; the verdict says so
    plus = result["per_method"]["gradcamplusplus"]
    assert plus["verdict"] == "differ" and plus["max_abs"] > 1e-3
    assert "adds 1e-6" in plus["note"]
    assert any(v.startswith("gradcamplusplus: differ") and "adds 1e-6" in v
               for v in result["verdicts"])


def test_handwritten_gradcamplusplus_is_the_paper_formula_and_the_library_adds_1e_6():
    """The reference's weights are eq. 19 of the paper computed pixel by pixel; with 1e-6
    added to alpha's denominator they are the library's own weights: that epsilon is the
    whole difference --compare shows for Grad-CAM++."""
    from pytorch_grad_cam import GradCAMPlusPlus
    rng = np.random.default_rng(0)
    acts = rng.random((2, 3, 4, 5)).astype(np.float32)
    grads = (rng.standard_normal((2, 3, 4, 5)) * 1e-3).astype(np.float32)
    grads[0, 1, 2, 3] = 0.0
    ours = reference.gradcampp_weights(acts, grads)
    paper = np.zeros((2, 3))
    for b in range(2):
        for k in range(3):
            total = float(acts[b, k].sum(dtype=np.float64))
            for i in range(4):
                for j in range(5):
                    g = float(grads[b, k, i, j])
                    denominator = 2 * g ** 2 + total * g ** 3
                    alpha = g ** 2 / denominator if denominator != 0 else 0.0
                    paper[b, k] += alpha * max(g, 0.0)
    assert np.allclose(ours, paper, rtol=1e-4, atol=0)
    library = GradCAMPlusPlus.get_cam_weights(None, None, None, None, acts, grads)
    assert np.abs(library - paper).max() > 0.1 * np.abs(paper).max()  # at 1e-3, eps matters
    g2 = grads.astype(np.float64) ** 2
    with_eps = np.where(grads != 0, g2 / (2 * g2 + acts.sum(axis=(2, 3), keepdims=True)
                                          * g2 * grads + 1e-6), 0)
    assert np.allclose((with_eps * np.maximum(grads, 0)).sum(axis=(2, 3)), library, rtol=1e-4)


def test_disabling_the_inplace_fix_shows_the_error(shared_course_tree):
    result = course_run(shared_course_tree, "features.10", **{"model.fix_inplace": False})
    assert result["per_method"]["gradcam"]["verdict"] == "differ"
    assert result["per_method"]["gradcam"]["max_abs"] > 0.05
    # the inplace bug, not the library's 1e-6, is what this run shows: no note blames it
    assert all("note" not in info for info in result["per_method"].values())
    assert not any("adds 1e-6" in v for v in result["verdicts"])


def test_library_matches_handwritten_on_demo_network(tmp_path):
    cfg = load_config(REPO / "configs" / "demo_catdog.yaml",
                      {"methods": REFERENCED, "compare.enabled": True, "channels.enabled": False,
                       "metrics": []})
    summary = run(cfg, RunOptions(out_root=tmp_path, **QUIET))
    rows = (tmp_path / "demo_catdog" / "compare" / "compare.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2 * 3
    for method in EXACT:
        assert summary.compare["per_method"][method]["max_abs"] <= 1e-5
    # the trained network's gradients at this layer are small: Grad-CAM++'s epsilon shows
    assert summary.compare["per_method"]["gradcamplusplus"]["max_abs"] > 0.1
    figure = cv2.imread(str(tmp_path / "demo_catdog" / "compare" / "layercam" / "both__cat.png"))
    assert figure.shape[1] > 3 * 224


@pytest.fixture(scope="module")
def library_maps(shared_course_tree):
    """A course run with saved arrays (once per module): the maps reference folders are built
    from, copied aside so later runs of the same config cannot replace them."""
    cfg = load_config(shared_course_tree / "configs" / "alexnet_catdog.yaml",
                      {"channels.enabled": False, "methods": ["gradcam"], "metrics": []})
    run(cfg, RunOptions(overwrite=True, **QUIET))
    kept = shared_course_tree / "library_maps"
    shutil.copytree(shared_course_tree / "results" / "alexnet_catdog" / "cams" / "gradcam", kept)
    return shared_course_tree, kept


def reference_folder(course_tree, maps_dir, write):
    folder = Path(tempfile.mkdtemp(prefix="student-", dir=course_tree))
    for npy in sorted(maps_dir.glob("*.npy")):
        image, cls = npy.stem.split("__")
        write(folder / f"{image}__{cls}__gradcam", np.load(npy))
    return folder


def compare_with(course_tree, folder):
    cfg = load_config(course_tree / "configs" / "alexnet_catdog.yaml",
                      {"channels.enabled": False, "methods": ["gradcam"], "compare.enabled": True,
                       "metrics": [],
                       "compare.reference_dir": str(folder)})
    summary = run(cfg, RunOptions(overwrite=True, **QUIET))
    compare_with.lines = console_lines(summary)
    return summary.compare


def test_reference_dir_npy_round_trip_is_exact(library_maps):
    tree, maps = library_maps
    folder = reference_folder(tree, maps, lambda p, m: np.save(p.with_suffix(".npy"), m))
    result = compare_with(tree, folder)
    assert result["per_method"]["gradcam"] == {"verdict": "agree", "max_abs": 0.0, "maps": 6,
                                               "r_min": 1.0, "r_median": 1.0, "missing": 0}
    (folder / "dog__cat__gradcam.npy").unlink()
    (folder / "stray__cat__gradcam.npy").write_bytes(b"")
    for i in range(150):  # a folder of other pictures: counted, the first 100 named
        (folder / f"zz{i:03d}.png").write_bytes(b"")
    result = compare_with(tree, folder)
    assert result["missing"] == ["dog__cat__gradcam"]
    assert result["unmatched"] == ["stray__cat__gradcam.npy"] + [f"zz{i:03d}.png"
                                                                 for i in range(99)]
    assert result["unmatched_count"] == 151
    assert result["per_method"]["gradcam"]["maps"] == 5
    said = [line for line in compare_with.lines if line.startswith("  compare: ")]
    assert said == ["  compare: 1 map(s) had no reference file (first: dog__cat__gradcam); all "
                    "are listed in summary.json",
                    "  compare: 151 file(s) in the reference folder matched no map (first: "
                    "stray__cat__gradcam.npy; the first 100 are listed); names are "
                    "<image>__<class>__<method>.npy or .png"]


def test_reference_dir_png_round_trip_within_quantisation(library_maps):
    tree, maps = library_maps
    folder = reference_folder(tree, maps, lambda p, m: cv2.imwrite(str(p.with_suffix(".png")),
                                                                   np.uint8(np.round(m * 255))))
    result = compare_with(tree, folder)
    info = result["per_method"]["gradcam"]
    assert 0 < info["max_abs"] <= 1 / 255
    # the maps are the library's own, rounded to 8 bits: that rounding is no "differ" (it used
    # to say "differ ... the same map resized or scaled another way" at tolerance 1e-4)
    assert info["verdict"] == "agree" and "note" not in info
    line = [v for v in compare_with.lines if v.startswith("  compare gradcam: ")]
    assert line == [f"  compare gradcam: agree (max |diff| {info['max_abs']:.2e} over 6 maps, "
                    f"tolerance 0.0001; 1/255 for the 8-bit PNG maps, their rounding)"]
    # beyond the rounding it still differs
    folder = reference_folder(tree, maps, lambda p, m: cv2.imwrite(
        str(p.with_suffix(".png")), np.uint8(np.round(np.clip(m * 255 - 3, 0, 255)))))
    assert compare_with(tree, folder)["per_method"]["gradcam"]["verdict"] == "differ"


def test_wrong_reference_is_reported_as_differ(library_maps):
    tree, maps = library_maps
    folder = reference_folder(tree, maps, lambda p, m: np.save(p.with_suffix(".npy"), m.T.copy()))
    result = compare_with(tree, folder)
    assert result["per_method"]["gradcam"]["verdict"] == "differ"
    assert result["per_method"]["gradcam"]["max_abs"] > 0.1
    assert result["per_method"]["gradcam"]["r_median"] < 0.95
    assert "the maps differ in shape" in result["per_method"]["gradcam"]["note"]


def test_a_differ_says_what_the_correlations_tell(library_maps):
    """A student's maps made another way (upsampled from a coarser grid: r near 1, a large
    |diff|) and one blank map (the inplace-ReLU trap): the verdict line says both, names the
    least correlated map and points at the doc; the report's warning carries the same words."""
    tree, maps = library_maps

    def coarse(path, m):
        small = cv2.resize(m, (m.shape[1] // 8, m.shape[0] // 8), interpolation=cv2.INTER_AREA)
        made = cv2.resize(small, m.shape[::-1], interpolation=cv2.INTER_NEAREST)
        np.save(path.with_suffix(".npy"), np.zeros_like(m) if path.name == "cat__dog__gradcam"
                else made)
    result = compare_with(tree, reference_folder(tree, maps, coarse))
    info = result["per_method"]["gradcam"]
    assert info["verdict"] == "differ" and info["max_abs"] > 0.05
    assert info["r_min"] == 0.0 and info["r_median"] >= 0.95
    assert info["note"].startswith(f"Pearson r median {info['r_median']:.2f}, lowest 0.00 "
                                   f"(cat / dog); 1 map(s) at r = 0, one of the two constant")
    assert "r near 1 with a large |diff| is the same map resized or scaled" in info["note"]
    assert info["note"].endswith("see docs/compare.md, hand-written references")
    line = [v for v in compare_with.lines if v.startswith("  compare gradcam: differ")]
    assert len(line) == 1 and line[0].endswith(info["note"])
    html = (tree / "results" / "alexnet_catdog" / "report.html").read_text()
    assert "1 map(s) at r = 0, one of the two constant" in html


def test_badly_shaped_reference_names_the_file(library_maps):
    tree, maps = library_maps
    folder = reference_folder(tree, maps, lambda p, m: np.save(p.with_suffix(".npy"), m[None, None].repeat(2, 0)))
    from explain.errors import ExplainError
    with pytest.raises(ExplainError, match=r"cat__cat__gradcam\.npy: expected a 2-D numeric map"):
        compare_with(tree, folder)


def test_gradcam_without_relu_on_weights_differs_from_reference():
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(1, 16, 7, 7)), 0).astype(np.float32)
    grads = rng.normal(size=(1, 16, 7, 7)).astype(np.float32)
    right = reference.reference_cam("gradcam", acts, grads, (56, 56))[0]
    wrong_weights = np.abs(grads.mean(axis=(2, 3)))[:, :, None, None]  # a classic slip
    wrong = reference.finish((wrong_weights * acts).sum(axis=1)[0], (56, 56))
    numbers = compare.metrics(right, wrong)
    assert numbers["max_abs"] > 0.1 and numbers["pearson"] < 0.99


def test_constant_maps_give_defined_metrics():
    zero, other = np.zeros((8, 8), np.float32), np.random.default_rng(1).random((8, 8)).astype(np.float32)
    assert compare.metrics(zero, zero) == {"max_abs": 0.0, "mean_abs": 0.0, "pearson": 1.0, "iou_top20": 1.0}
    numbers = compare.metrics(zero, other)
    assert numbers["pearson"] == 0.0 and numbers["iou_top20"] == 0.0
    assert not any(np.isnan(v) for v in numbers.values())
    assert compare.metrics(other, other)["pearson"] == pytest.approx(1.0)


def test_pearson_is_numpys_correlation():
    """compare.pearson (dot products of the centred values) is np.corrcoef's r to 1e-12, on
    smooth and noisy maps, float32 and float64, and leaves its inputs unchanged."""
    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.random((224, 448), dtype=np.float32), (0, 0), 12)
    pairs = [(base, base + 0.5 * cv2.GaussianBlur(rng.random((224, 448), dtype=np.float32),
                                                  (0, 0), 12)),
             (base, 1 - base), (rng.random((7, 9)), rng.random((7, 9)))]
    for a, b in pairs:
        kept = a.copy(), b.copy()
        want = np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1]
        assert compare.pearson(a, b) == pytest.approx(want, abs=1e-12)
        assert np.array_equal(a, kept[0]) and np.array_equal(b, kept[1])
    assert compare.pearson(base, 1 - base) == pytest.approx(-1.0, abs=1e-9)  # float32 1 - x


def test_the_guard_note_says_what_it_switched():
    """The run's note on the inplace guard counts the modules it switched, or says the model
    has none (the demo network), or that the guard is off."""
    from types import SimpleNamespace as Plain

    from explain.runner import _guard_note
    on, off = (Plain(cfg=Plain(model=Plain(fix_inplace=flag))) for flag in (True, False))
    assert _guard_note(on, Plain(inplace_switched=7)).startswith(
        "inplace guard on: 7 inplace module(s) made non-inplace for the run, hooked activations")
    assert _guard_note(on, Plain(inplace_switched=0)).startswith(
        "inplace guard on: no inplace module in the model, hooked activations copied")
    assert _guard_note(off, Plain(inplace_switched=0)).startswith("inplace guard OFF")


def test_a_reference_folder_named_from_the_working_directory_gets_the_hint(
        library_maps, monkeypatch, capsys):
    """compare.reference_dir is read from the config's folder, as images are: a folder that
    exists from the working directory instead is named with the path to give, and the line
    names the config file and that the command line set the field."""
    from explain.cli import main
    tree, maps = library_maps
    (tree / "mine").mkdir(exist_ok=True)
    monkeypatch.chdir(tree)
    config = str(Path("configs") / "alexnet_catdog.yaml")
    assert main([config, "--compare", "--set", "compare.reference_dir=mine", "--quiet",
                 "--set", "metrics=[]", "--set", "channels.enabled=false"]) == 2
    err = capsys.readouterr().err
    assert err == (f"explain: error: {config} (compare.reference_dir from the command line): "
                   f"compare.reference_dir: folder not found: {tree / 'configs' / 'mine'} "
                   f"(relative paths are read from the config's folder; 'mine' exists from the "
                   f"working directory: give it as '{tree / 'mine'}')\n")


def test_the_comparison_figure_leaves_a_margin_around_its_panes():
    """The first pane sat flush against the left edge (a newcomer's note): a white margin left
    of and below the panes, the library map right after it, its top-left value in jet blue."""
    lib = np.zeros((40, 50), np.float32)
    fig = compare.comparison_figure(lib, lib, "t")
    m = compare.MARGIN
    assert (fig[:, :m] == 255).all() and (fig[-m:] == 255).all()
    pane_top = 28 + 24  # the title's strip, then the pane's name
    assert tuple(fig[pane_top, m]) == tuple(fig[pane_top + 39, m + 49]) != (255, 255, 255)
    assert fig[pane_top, m, 2] > 100 and fig[pane_top, m, 0] < 50  # jet's 0 is dark blue


def test_a_differ_of_blank_maps_only_says_nothing_of_their_shape():
    """Every map at r = 0 (all the student's maps blank: the inplace-ReLU trap): the note
    said "the maps differ in shape" against its own explanation; shape is judged on the
    maps that have one."""
    from explain.results import CompareRow

    def row(r):
        return CompareRow(image="cat", class_name="dog", method="gradcam", max_abs=1.0,
                          mean_abs=0.5, pearson=r, iou_top20=0.0)
    note = compare.why_references_differ([row(0.0)] * 3)
    assert "3 map(s) at r = 0" in note and "shape" not in note and "resized" not in note
    assert "resized or scaled" in compare.why_references_differ([row(0.0), row(0.99)])
    assert "differ in shape" in compare.why_references_differ([row(0.0), row(0.5), row(0.99)])


def test_the_documented_min_max_is_the_one_that_agrees():
    """docs/compare.md printed the scaling as (m - min) / (max + 1e-7): a student's LayerCAM
    written that way (its map has no zero, so min > 0) differed from the library by 4.85e-3 at
    features.10. The scaling divides by the maximum after the shift: (max - min + 1e-7)."""
    m = np.array([[0.2, 0.5], [1.0, 0.7]], dtype=np.float32)  # min > 0, as a LayerCAM map
    written = "(m - min) / (max - min + 1e-7)"
    as_written = (m - m.min()) / (m.max() - m.min() + 1e-7)
    assert np.allclose(reference.min_max(m), as_written, atol=0, rtol=1e-6)
    for path in (REPO / "docs" / "compare.md", Path(reference.__file__)):
        text = " ".join(path.read_text().split())
        assert "(m - min) / (max + 1e-7)" not in text, path
        assert written in text, path


def test_a_resumed_run_counts_the_kept_images_references(small_course_tree):
    """A reference folder of every map but one of the kept image cat's, cat's Grad-CAM maps
    of the two classes swapped and dog's cat Grad-CAM map at the layer's 6 x 6: the run
    --resume continues (both.jpg computed again) says none of the folder's files matched no
    map (it listed the kept images' 7 files), names cat's missing map, the swap and the
    resized map, as the whole run does (the kept images' swaps and shapes were the
    interrupted process's alone)."""
    cfg_path = small_course_tree / "configs" / "alexnet_catdog.yaml"
    sets = {"preprocess.size": [112, 112], "metrics": [], "channels.enabled": False,
            "output.save_arrays": True}
    first = run(load_config(cfg_path, sets), RunOptions(**QUIET))
    refs = small_course_tree / "refs"
    refs.mkdir()
    cams = small_course_tree / "results" / "alexnet_catdog" / "cams"
    swap = {"cat__cat": "cat__dog", "cat__dog": "cat__cat"}
    for method in ("gradcam", "layercam"):
        for npy in (cams / method).glob("*.npy"):
            name = swap.get(npy.stem, npy.stem) if method == "gradcam" else npy.stem
            if f"{name}__{method}" != "cat__dog__layercam":
                shutil.copy(npy, refs / f"{name}__{method}.npy")
    small = cv2.resize(np.load(refs / "dog__cat__gradcam.npy"), (6, 6),
                       interpolation=cv2.INTER_AREA)
    np.save(refs / "dog__cat__gradcam.npy", small)
    sets.update({"compare.enabled": True, "compare.reference_dir": str(refs)})
    whole = run(load_config(cfg_path, sets), RunOptions(overwrite=True, **QUIET)).compare
    assert whole["missing"] == ["cat__dog__layercam"] and whole["unmatched"] == []
    said = whole["per_method"]["gradcam"]["note"] + whole["verdicts"][0]
    assert "2 map(s) match another class's map (cat__cat: r 1.00 with the library's dog map" \
        in said and "1 reference map(s) of another shape (6x6 -> 112x112)" in said, said
    folder = small_course_tree / "results" / first.name
    page = (folder / "report.html").read_text(encoding="utf-8")  # the Run table names it
    assert '<th>compared with</th><td>the reference maps in <span class="path">../refs</span>' \
           ', tolerance 0.0001' in page
    table = (folder / "compare" / "compare.csv").read_text().splitlines()
    assert table[0].endswith(",resized,crossed") or table[0].endswith(",crossed,resized"), table[0]
    assert sum("6x6 -> 112x112" in line for line in table) == 1
    (folder / "summary.json").unlink()
    (folder / "items" / "both.json").unlink()
    resumed = run(load_config(cfg_path, sets), RunOptions(resume=True, **QUIET))
    assert any(n.startswith("resumed: 2 image(s) kept") for n in resumed.notes), resumed.notes
    assert resumed.compare["unmatched"] == [] and resumed.compare["missing"] == whole["missing"]
    assert resumed.compare["verdicts"][0] == whole["verdicts"][0]
    assert resumed.compare["per_method"]["gradcam"]["note"] == \
        whole["per_method"]["gradcam"]["note"]
    assert resumed.compare["verdicts"][1].split(" (")[0] == "layercam: agree"
