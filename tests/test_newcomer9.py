"""A student of the course compares hand-written Grad-CAM / LayerCAM with the library's
(``compare.reference_dir``): maps left at the layer's 13 x 13 agree once resized and scaled
as the library's are, swapped class indices are named as such, a pooling target layer
(``features.12``) is noted with the conv before it, and the student's own hook left on the
model is named when it breaks explain's pass."""

from __future__ import annotations

import numpy as np
import torch

import explain
from explain import compare
from explain.config import load_config
from explain.results import CompareRow
from explain.runner import RunOptions, run
from explain.writers.summary import console_lines

QUIET = dict(progress=False, log=lambda _: None)
CLASSES = {"cat": 0, "dog": 1}


def _run(tree, **sets):
    fields = {"channels.enabled": False, "methods": ["gradcam", "layercam"], "metrics": [],
              **sets}
    cfg = load_config(tree / "configs" / "alexnet_catdog.yaml", fields)
    summary = run(cfg, RunOptions(overwrite=True, **QUIET))
    return summary, console_lines(summary)


def _student_maps(tree, folder, classes=CLASSES):
    """The lab's own code: a forward hook handing a copy on, a tensor hook, one backward pass
    per class; ReLU and min-max at the layer's 13 x 13, never resized (the mistake)."""
    model = torch.load(tree / "models" / "torch_alex.pth", weights_only=False).eval()
    layer = model.features[10]
    store = {}

    def keep(module, inputs, output):
        store["A"] = output
        output.register_hook(lambda grad: store.__setitem__("G", grad))
        return output.clone()

    inputs = {name: explain.cam(model, tree / "images" / f"{name}.jpg", "features.10",
                                "gradcam", classes=CLASSES,
                                preprocess={"size": [224, 224]}).input[None]
              for name in ("cat", "dog", "both")}
    handle = layer.register_forward_hook(keep)
    folder.mkdir()
    for name, x in inputs.items():
        for cls, index in classes.items():
            model.zero_grad()
            model(x)[0, index].backward()
            a, g = store["A"][0].detach().numpy(), store["G"][0].numpy()
            maps = {"gradcam": (g.mean(axis=(1, 2))[:, None, None] * a).sum(0),
                    "layercam": (np.maximum(g, 0) * a).sum(0)}
            for method, m in maps.items():
                m = np.maximum(m, 0)
                np.save(folder / f"{name}__{cls}__{method}.npy",
                        (m / (m.max() + 1e-7)).astype(np.float32))
    handle.remove()


def test_maps_left_at_the_layers_resolution_agree_and_are_said_resized(small_course_tree):
    folder = small_course_tree / "mine"
    _student_maps(small_course_tree, folder)
    assert np.load(folder / "cat__cat__gradcam.npy").shape == (13, 13)
    summary, lines = _run(small_course_tree, **{"compare.enabled": True,
                                                "compare.reference_dir": str(folder)})
    for method in ("gradcam", "layercam"):
        info = summary.compare["per_method"][method]
        assert info["verdict"] == "agree" and info["max_abs"] <= 1e-4, info
        line = [v for v in lines if v.startswith(f"  compare {method}: agree")]
        assert len(line) == 1
        assert "6 reference map(s) of another shape (13x13 -> 224x224) resized here, then " \
               "min-max scaled, as the library's maps are" in line[0]


def test_swapped_class_indices_are_named_not_the_inplace_trap(small_course_tree):
    folder = small_course_tree / "swapped"
    _student_maps(small_course_tree, folder, classes={"cat": 1, "dog": 0})
    summary, lines = _run(small_course_tree, **{"compare.enabled": True,
                                                "compare.reference_dir": str(folder)})
    info = summary.compare["per_method"]["gradcam"]
    assert info["verdict"] == "differ"
    assert "match another class's map" in info["note"]
    assert "are the class indices in your script swapped? (the run's: cat = 0, dog = 1)" \
        in info["note"]
    assert "inplace" not in info["note"]


def test_a_blank_map_note_says_what_the_hook_should_do():
    def row(r):
        return CompareRow(image="cat", class_name="dog", method="gradcam", max_abs=1.0,
                          mean_abs=0.5, pearson=r, iou_top20=0.0)
    note = compare.why_references_differ([row(0.0), row(0.99), row(0.99)], resized=True)
    assert "the forward hook should return output.clone()" in note
    # the maps were resized here as the library's are: no "resized another way"
    assert "resized or scaled another way" not in note
    assert "inplace-ReLU trap" in note


def test_a_pooling_target_layer_is_noted_with_the_conv_before_it(small_course_tree):
    summary, lines = _run(small_course_tree, target_layers=["features.12"],
                          methods=["gradcam"])
    assert ("  note: target_layers: 'features.12' is a MaxPool2d: it only pools, drops or "
            "copies its input, so its maps are that input's (coarser after pooling), not a "
            "layer's of its own; the last layer with weights before it is 'features.10'") \
        in lines
    _, lines = _run(small_course_tree, methods=["gradcam"])
    assert not [v for v in lines if "only pools" in v]


def test_a_students_own_hook_left_on_the_model_is_named_not_the_input_size():
    """The lab's forward hook, registered before explain.cam is called, fails in explain's
    no-grad pass: the one line named preprocess.size; it names the hook and what to do."""
    from helpers import explain_error, tiny_net
    net = tiny_net()

    def fwd(module, inputs, output):
        output.register_hook(lambda grad: None)

    handle = net[0].register_forward_hook(fwd)
    photo = np.full((32, 32, 3), 120, dtype=np.uint8)
    text = explain_error(explain.cam, net, photo, "0", "gradcam", classes=["cat", "dog"])
    assert "in fwd (test_newcomer9.py:" in text
    assert "a hook on the model that is not explain's" in text
    assert text.endswith("remove your own hooks (handle.remove()) before explain runs the model")
    assert "preprocess.size" not in text
    handle.remove()
    assert explain.cam(net, photo, "0", "gradcam", classes=["cat", "dog"]).maps


def test_a_reference_dir_without_compare_enabled_is_noted(small_course_tree):
    """The README names compare.reference_dir; set alone it was silently ignored."""
    folder = small_course_tree / "mine"
    folder.mkdir()
    _, lines = _run(small_course_tree, methods=["gradcam"],
                    **{"compare.reference_dir": str(folder)})
    assert ("  note: compare.reference_dir is set but compare.enabled is false: nothing was "
            "compared; set compare.enabled: true or add --compare") in lines
    _, lines = _run(small_course_tree, methods=["gradcam"],
                    **{"compare.reference_dir": str(folder), "compare.enabled": True})
    assert not [v for v in lines if "nothing was compared" in v]


def test_a_reference_of_a_method_the_run_does_not_make_says_so():
    """A folder of gradcam maps beside a gradcamplusplus run: the hint said
    'both__cat__gradcam.npy, which looks meant for both__cat__gradcamplusplus.npy'."""
    from explain.writers.summary import _meant
    hint = _meant("both__cat__gradcam.npy", ["both__cat__gradcamplusplus"], ["gradcamplusplus"])
    assert hint == (", a map of method 'gradcam', which this run does not make (its methods: "
                    "gradcamplusplus)")
    assert _meant("both_cat_gradcam.npy", ["both__cat__gradcam"], ["gradcam"]) == \
        ", which looks meant for both__cat__gradcam.npy"
    assert _meant("both__cat__gradcam.npy", [], ["gradcam"]) == ""
    assert _meant("both__cat__GradCAM.npy", ["both__cat__gradcam"], ["gradcam"]) == (
        ", whose method is written 'GradCAM': method names are lower-case, 'gradcam'")


def test_which_map_to_trust_without_numbers_is_one_line_of_help(tmp_path):
    """A course run with metrics: [] showed the whole paragraph on bootstrap intervals and the
    rule for '0 image(s)'; it now says in one line what would fill the section."""
    import explain
    import torch
    from helpers import tiny_config, tiny_net
    torch.save(tiny_net(), tmp_path / "m.pth")
    path = tiny_config(tmp_path, {"file": "m.pth"}, classes={"a": 0, "b": 1}, metrics=[],
                       output={"dir": str(tmp_path / "out")})
    page = (explain.run(path, progress=False, log=lambda line: None).folder
            / "report.html").read_text()
    section = page[page.index('<section id="trust">'):]
    section = section[:section.index("</section>")]
    assert "on at least 5 images, this section ranks the methods against baselines" in section
    assert "Intervals:" not in section and "The rule:" not in section
