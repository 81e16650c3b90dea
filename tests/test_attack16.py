"""The sixteenth attack: what a model factory named in a config computes for real while its
model is only sized on the meta device (docs/trust.md)."""

from __future__ import annotations

import resource

import pytest

from explain.errors import ExplainError
from explain.models import factories
from explain.models.factories import make_model

pytest.importorskip("timm")
linux = pytest.mark.skipif(not hasattr(resource, "RLIMIT_DATA"), reason="Linux's RLIMIT_DATA")


@linux
@pytest.mark.parametrize("arch, args, growth", [
    ("timm:regnetx_002", {"depth": 2**33}, None),  # torch.arange(depth, device='cpu'): 32 GB
    ("timm:cait_xxs24_224", {"depth": 2**31}, 2**26),  # a list of depth rates: 16 GB asked
    ("timm:vit_tiny_patch16_224", {"depth": 2**24}, 2**26),  # 4M drop-path tensors took 3.3 GB
])
def test_a_factory_allocating_while_sized_is_refused(monkeypatch, arch, args, growth):
    if growth:  # a smaller cap: the same refusal, sooner
        monkeypatch.setattr(factories, "MAX_BUILD_GROWTH", growth)
    before = resource.getrlimit(resource.RLIMIT_DATA)
    with pytest.raises(ExplainError) as err:
        make_model(arch, args, "model.arch", False)
    assert str(err.value).startswith(f"model.arch: '{arch}' with model.arch_args {args} asks "
                                     f"for over ")
    assert "of memory while it is only sized (before any weight is made): refused" in str(err.value)
    assert resource.getrlimit(resource.RLIMIT_DATA) == before  # the cap is lifted again
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 8 * 2**20  # KiB: under 8 GiB


def test_the_cap_leaves_a_sized_build_alone():
    model = make_model("timm:cait_xxs24_224", {"depth": 2, "num_classes": 3}, "model.arch", False)
    assert len(model.blocks) == 2
