"""The benchmark scripts run and print their side-by-side ratios (tiny sizes: this
checks that they work, not how fast anything is)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, *args: str, cwd: Path) -> str:
    """Run a benchmark script in ``cwd`` (a temporary directory: nothing lands in the checkout)."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_qeq_scaling_prints_exponents_and_ratios(tmp_path):
    out = run_benchmark("qeq_scaling.py", "--max-atoms", "700", "--dense-max-atoms", "700", "--threads", "1",
                        cwd=tmp_path)
    assert "dense: warm total time ~ N^" in out and "iterative: warm total time ~ N^" in out
    assert "dense / iterative time" in out and "torch-pme calculator / mesh set-up kept:" in out
    assert "jacobi / two-level time" in out and "iterative: matrix-vector products ~ N^" in out


@pytest.mark.slow
def test_speed_vs_xtb_prints_speed_ups(tmp_path):
    out = run_benchmark("speed_vs_xtb.py", "--max-atoms", "60", "--repeats", "1", "--tensor-orders", "0", "1",
                        "--xtb-method", "GFN1-xTB", "--output", str(tmp_path / "speed.json"), cwd=tmp_path)
    assert "speed-up" in out.lower() and "time ratio" in out
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert set(rows[0]["hipqeq_s_by_tensor_order"]) == {"0", "1"}


@pytest.mark.slow
def test_calculator_precision_prints_the_time_ratio(tmp_path):
    out = run_benchmark("calculator_precision.py", "--repeats", "1", cwd=tmp_path)
    assert "float64 / float32 time ratio:" in out and "|FD - F|" in out


@pytest.mark.slow
def test_tblite_vacuum_drift_prints_changes_per_doubling(tmp_path):
    out = run_benchmark("tblite_vacuum_drift.py", "--lengths", "22.5", "45", cwd=tmp_path)
    assert "Cs2PbI4 RP n=1 slab" in out and "NaCl (001) bilayer" in out
    assert out.count("meV/atom") >= 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cp2k.psmp") is None,
                    reason="cp2k.psmp not installed (apt-get install cp2k; CI installs it)")
def test_cp2k_vs_tblite_prints_the_comparison(tmp_path):
    out = run_benchmark("cp2k_vs_tblite.py", "--frames", "2", "--supercell", "1", "--kpoint-density", "12",
                        "--output", str(tmp_path / "rows.json"), cwd=tmp_path)
    assert "CP2K converged 2/2" in out and "tblite - CP2K after one energy offset per element" in out
    again = run_benchmark("cp2k_vs_tblite.py", "--from-json", str(tmp_path / "rows.json"), cwd=tmp_path)
    assert again.split("frame | atoms | Q")[1] == out.split("frame | atoms | Q")[1]


@pytest.mark.slow
def test_shadow_md_prints_the_side_by_side_ratios(tmp_path):
    out = run_benchmark("shadow_md.py", "--repeat", "1", "--steps", "4", "--check-every", "2",
                        "--config", str(ROOT / "config" / "toy.yaml"), cwd=tmp_path)
    assert "x faster" in out and "drift meV/atom/ps" in out
    assert all(mode in out for mode in ("full-tight", "full-loose", "shadow"))


@pytest.mark.slow
def test_md_scaling_prints_step_times_and_exponents(tmp_path):
    out = run_benchmark("md_scaling.py", "--min-atoms", "30", "--max-atoms", "140", "--points", "2",
                        "--steps", "1", "--threads", "1", cwd=tmp_path)
    assert "cubic (pytorch): time per step ~ N^" in out and "CPU time ~ N^" in out
    assert " slab  pytorch     112 " in out


@pytest.mark.slow
def test_md_scaling_times_both_kernels_side_by_side(tmp_path):
    out = run_benchmark("md_scaling.py", "--families", "slab", "--min-atoms", "100", "--max-atoms", "120",
                        "--points", "1", "--steps", "1", "--threads", "1", "--qeq", "shadow",
                        "--kernels", "pytorch", "numba", cwd=tmp_path)
    assert " slab  pytorch     112 " in out and " slab    numba     112 " in out
    assert " slab    ratio     112  numba / pytorch: CPU time per step " in out


@pytest.mark.slow
def test_kspace_md_drift_prints_each_method_against_ewald(tmp_path):
    out = run_benchmark("kspace_md_drift.py", "--steps", "3", "--threads", "1", cwd=tmp_path)
    assert "|drift| pme / ewald:" in out and "|drift| p3m / ewald:" in out


@pytest.mark.slow
def test_ewald_balance_prints_the_measured_weights(tmp_path):
    mesh = run_benchmark("ewald_balance.py", "mesh", "--repeat", "2", "--weights", "0.001", "0.01", "1",
                         "--steps", "1", "--kernels", "pytorch", cwd=tmp_path)
    assert "take the dense solve" in mesh
    dense = run_benchmark("ewald_balance.py", "dense", "--repeat", "2", "--weights", "0.003", "0.03", "0.3",
                          "--steps", "1", "--kernels", "pytorch", cwd=tmp_path)
    for out in (mesh, dense):
        assert "measured weight:" in out and "fastest balance: weight" in out
