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
"""

__version__ = "0.1.0"
