"""Newcomer 10: a PhD student's own small CNN (state_dict + mynet.py) on 64 x 64 grey
images, a labelled folder, hand-written Grad-CAM, and the notebook API."""

import numpy as np

from explain.api.display import grid_figure


def test_show_titles_of_a_labelled_run_stay_in_their_cell():
    """Run.show's photo title in a labelled run ("malignant_0 (predicted malignant, label
    malignant)") ran over the next cell's title and off the figure's left edge."""
    photo = np.zeros((64, 64, 3), np.uint8)
    row = [("malignant_0 (predicted malignant, label malignant)", photo),
           ("gradcam · malignant (p 1.000)", photo), ("layercam · malignant (p 1.000)", photo)]
    fig = grid_figure([row, row])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    for r in range(2):
        boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes[3 * r:3 * r + 3]]
        for box in boxes:
            assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height, box
        for left, right in zip(boxes, boxes[1:]):
            assert left.x1 <= right.x0, (left, right)
