"""explain: one YAML file -> a reproducible class-activation-map study of an image classifier.

Pipeline, one module per stage: config -> model -> images -> engine -> render / channels
-> compare -> report, tied together by ``runner``.
"""

__version__ = "0.1.0"
