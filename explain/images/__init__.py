"""Images: finding what a config names (``finding``, ``labelled``, ``found``) and reading it for
the model (``reading``: bounded, decoded once, preprocessed). The names the rest of explain
uses are taken from here."""

from explain.images.finding import find_images
from explain.images.found import IMAGE_SUFFIXES, Note
from explain.images.jpeg import jpeg_complete
from explain.images.reading import (ImageError, ImageRef, Prepared, batches, group_by_shape,
                                    input_size, precheck, prepare, preprocess,
                                    read_rgb)

__all__ = ["IMAGE_SUFFIXES", "ImageError", "ImageRef", "Note", "Prepared", "batches",
           "find_images", "group_by_shape", "input_size", "jpeg_complete", "precheck",
           "prepare", "preprocess", "read_rgb"]
