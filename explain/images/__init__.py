"""Images: finding what a config names (``finding``, ``labelled``, ``found``) and reading it for
the model (``reading``: bounded, decoded once, preprocessed). The names the rest of explain
uses are taken from here."""

from PIL import Image

from explain.config import MAX_PIXELS

from explain.images.finding import find_images
from explain.images.found import IMAGE_SUFFIXES, Note
from explain.images.reading import (ImageError, ImageRef, Prepared, batches, group_by_shape,
                                    input_size, jpeg_complete, precheck, prepare, preprocess,
                                    read_rgb)

__all__ = ["IMAGE_SUFFIXES", "ImageError", "ImageRef", "Note", "Prepared", "batches",
           "find_images", "group_by_shape", "input_size", "jpeg_complete", "precheck",
           "prepare", "preprocess", "read_rgb"]

# Pillow refuses a header of over twice its MAX_IMAGE_PIXELS (179 M pixels) as a decompression
# bomb, which read as 'not a readable image' for a file within preprocess.max_pixels (or over it)
if Image.MAX_IMAGE_PIXELS is not None and 2 * Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2 + 1
