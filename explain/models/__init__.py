"""Where the network comes from and how the run holds it.

- ``loading``: the network a config names (model file, factory or Keras file);
- ``pickles``: reading torch files without running their code; ``formats``: safetensors and
  TorchScript recognised by content;
- ``factories``: allow-listed factories, no downloads, sizes bounded before building;
- ``keras``: Keras 3 files on the torch backend;
- ``heads``: what forward returns, and the score a map explains;
- ``layouts``: token sequences and channels-last maps seen as (B, C, h, w);
- ``labels``: the class names a model carries;
- ``guard``: the inplace guard, the model's state put back, the device.
"""
