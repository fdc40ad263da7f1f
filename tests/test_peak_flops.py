"""The device-peak table behind MFU (bigmodel/flops.py): whole device names, as JAX reports them,
each to its own vendor peak; a name inside another ("L4" in "NVIDIA L40S") or a kind the table
does not hold gives no peak, so MFU is null rather than wrong."""

import re

import pytest

from bigmodel.flops import DEVICE_KINDS, PEAK_FLOPS, device_name, device_peak_flops, mfu

TF = 1e12


@pytest.mark.parametrize("device_kind, name, peak_tf", [
    # CUDA device names, as jax.devices()[0].device_kind reports them
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756),
    ("NVIDIA H100 NVL", "H100 NVL", 835),
    ("NVIDIA H200", "H200", 989),
    ("NVIDIA H200 NVL", "H200 NVL", 835),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB", 312),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB", 312),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB", 312),
    ("NVIDIA A100 80GB PCIe", "A100 80GB", 312),
    ("NVIDIA L40S", "L40S", 362),
    ("NVIDIA L40", "L40", 181),
    ("NVIDIA L4", "L4", 121),
    # TPU kinds: JAX names v5e "TPU v5 lite", v5p "TPU v5", v6e "TPU v6 lite"
    ("TPU v4", "TPU v4", 275),
    ("TPU v5 lite", "TPU v5e", 197),
    ("TPU v5", "TPU v5p", 459),
    ("TPU v5p", "TPU v5p", 459),
    ("TPU v6 lite", "TPU v6e", 918),
    # the table's own names, in any case and spacing
    ("H100 SXM", "H100 SXM", 989),
    ("h100 sxm5 80gb", "H100 SXM", 989),
    ("TPU v5e", "TPU v5e", 197),
    ("nvidia_l40s", "L40S", 362),
])
def test_each_device_kind_gets_its_own_peak(device_kind, name, peak_tf):
    assert device_name(device_kind) == name
    assert device_peak_flops(device_kind) == peak_tf * TF


@pytest.mark.parametrize("device_kind", [
    "cpu", "TFRT_CPU_0", "", "NVIDIA GeForce RTX 4090", "NVIDIA GH200 480GB", "TPU v4 lite", "TPU7x", "TPU v3",
    "H100",  # which form factor? the SXM peak would be 31% high for a PCIe card
    "NVIDIA L40S-48C", "NVIDIA L4X", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA A100", "NVIDIA B200",
])
def test_a_kind_the_table_does_not_hold_has_no_peak(device_kind):
    assert device_name(device_kind) is None and device_peak_flops(device_kind) is None
    assert mfu(1e12, device_peak_flops(device_kind), 1) is None


def test_a_shorter_name_never_matches_inside_a_longer_one():
    # The old substring match gave "NVIDIA L40S" the L4's 121 TF (MFU 3× too high) and every H100 the SXM peak.
    assert device_peak_flops("NVIDIA L40S") != device_peak_flops("NVIDIA L4")
    assert device_peak_flops("NVIDIA L40") != device_peak_flops("NVIDIA L4")
    assert len({device_peak_flops(kind) for kind in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL")}) == 3


def test_every_name_has_a_pattern_and_each_kind_matches_one_pattern():
    assert set(DEVICE_KINDS) == set(PEAK_FLOPS)
    for name in PEAK_FLOPS:  # each name is a kind of its own, matched by its pattern and no other
        kind = name.upper()
        assert [other for other, pattern in DEVICE_KINDS.items() if re.fullmatch(pattern, kind)] == [name]
