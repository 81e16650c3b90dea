"""explain: one YAML file -> a reproducible class-activation-map study of an image classifier.

The pipeline, one step after the other (``runner`` ties them together, ``cli`` is the command
line, ``distributed`` the torchrun ranks):

config (``config``: the experiment, validated and frozen)
-> plan (``plan.planned``: images, model, layers, classes, device and one preflight pass,
   resolved once into a frozen ``RunPlan``)
-> engine (``engine.CamEngine``: one forward pass per batch, the only hooks on the model; each
   image's maps as slots with their records)
-> writers (``writers/``: one class per output: maps, metrics, channels, compare, guided,
   concepts, dataset, panels; pictures drawn by ``render`` and ``channels``)
-> summary and report (``results``: typed records, summary.json / summary.csv; the report
   page made from those records).

Importing explain points two folders that libraries would otherwise create outside the run
folder into one temporary folder, removed when the process ends (unless the user set them):
``KERAS_HOME`` (Keras writes ``keras.json`` there on its first import, else ``~/.keras``) and
``TORCHINDUCTOR_CACHE_DIR`` (importing torchvision or torch._dynamo creates it, else
``$TMPDIR/torchinductor_<user>``). This happens before torch or keras is imported.
"""

# no 'from __future__ import annotations' here: it would bind the name 'annotations' in
# this package and hide the explain.annotations module from 'from explain import annotations'
import os  # both loaded at Python's start, from the standard library
import sys

# ``python -m explain`` puts the working directory first on sys.path and imports this package
# before explain/__main__.py runs: a shared bundle's shutil.py, typing.py or cv2.py would be
# imported in place of the real ones. So nothing is imported from it (a trusted config's own
# module is looked for there last: explain.models.factories.own_modules).
if sys.argv[:1] == ["-m"] and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

__version__ = "0.1.0"

PRIVATE_DIRS = ("KERAS_HOME", "TORCHINDUCTOR_CACHE_DIR")


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:  # not in a forked child: the parent still uses the folder
        shutil.rmtree(folder, ignore_errors=True)


def _private_dirs() -> None:
    """Point the PRIVATE_DIRS the user did not set into a temporary folder of this process."""
    wanted = [name for name in PRIVATE_DIRS if not os.environ.get(name)]
    if not wanted:
        return
    try:
        folder = tempfile.mkdtemp(prefix="explain-")
    except OSError:  # no writable temporary folder: the libraries' own choice
        return
    for name in wanted:
        os.environ[name] = os.path.join(folder, name.lower())
    atexit.register(_remove, folder, os.getpid())


_private_dirs()

# The Python API (explain/api/): importing it imports no torch; a function imports what it needs
from explain.api import (CamBatch, CamResult, ChannelMaps, Run, cam,  # noqa: E402
                         channel_maps, load, load_model, run)
from explain.errors import ExplainError  # noqa: E402

__all__ = ["run", "load", "load_model", "cam", "channel_maps", "Run", "CamResult", "CamBatch",
           "ChannelMaps", "ExplainError"]
