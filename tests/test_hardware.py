import pytest

from rigbench import hardware
from rigbench.errors import UnknownRigError


def test_catalog_rigs_and_counts():
    r = hardware.load("2x rtx3090")
    assert [g.name for g in r.gpus] == ["RTX 3090", "RTX 3090"] and r.gpus[0].bandwidth_gbs == 936
    assert hardware.load("h100").gpus[0].bandwidth_gbs == 3350
    assert hardware.load("cpu").gpus == []
    assert len(hardware.load("4x h200").gpus) == 4


def test_yaml_rig(tmp_path):
    p = tmp_path / "rig.yaml"
    p.write_text("name: box\ngpus:\n  - rtx5080\n  - {name: Mystery, vram_gb: 20, bandwidth_gbs: 500}\n"
                 "ram_gb: 96\nram_bandwidth_gbs: 80\n")
    r = hardware.load(str(p))
    assert r.name == "box" and [g.name for g in r.gpus] == ["RTX 5080", "Mystery"]
    assert r.ram_bandwidth_gbs == 80 and r.ram_bytes == 96 * 2**30


def test_unknown_gpu_asks_for_its_numbers():
    with pytest.raises(UnknownRigError, match="did you mean rtx5090"):
        hardware.load("rtx9090")
    with pytest.raises(UnknownRigError, match="bandwidth"):
        hardware.gpu_from_catalog("voodoo5")


def test_detect_reads_this_machine():
    r = hardware.detect()
    assert r.ram_bytes > 2**30 and r.cores >= 1


def test_all_reduces_cross_nvlink_pcie_peer_copies_or_host_memory():
    # GeForce cards have no PCIe peer copies: NCCL stages through host memory, each byte crossing the link twice
    assert hardware.described("rtx3090", 2, link="pcie4x16").collective_gbs == pytest.approx(25 / 2)
    assert hardware.described("rtx3090", 2, link="pcie4x4", p2p=True).collective_gbs == pytest.approx(6.25)
    assert hardware.described("rtx3090", 2, peer_link="nvlink-3090").collective_gbs == 56
    # datacenter cards copy peer to peer; the host link of a NVLink rig stays PCIe
    assert hardware.described("h100", 2, link="pcie5x16").collective_gbs == 50
    r = hardware.from_catalog("2x-h100")
    assert (r.link_gbs, r.collective_gbs) == (50, 450)
