"""hippynn's message-passing kernels: the numba ones (for large MD) give what the
plain-torch ones give, to every derivative order training and MD use."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import hipqeq._hippynn as kernels
from hipqeq.errors import HipqeqError
from hipqeq.models.potential import evaluate

from tests.unit.models.test_potential import cell_atoms, make_potential

pytest.importorskip("numba", reason="numba is in the ml extra")
from hippynn import custom_kernels  # noqa: E402


@pytest.fixture
def restore_kernels():
    yield
    kernels.select_kernels("pytorch")


def random_sums(seed=0, n_atoms=7, n_pairs=25, n_sensitivities=3, n_features=4):
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(0, n_atoms, (n_pairs,), generator=generator)
    second = torch.randint(0, n_atoms, (n_pairs,), generator=generator)
    sense = torch.randn(n_pairs, n_sensitivities, dtype=torch.float64, generator=generator, requires_grad=True)
    features = torch.randn(n_atoms, n_features, dtype=torch.float64, generator=generator, requires_grad=True)
    return sense, features, first, second


def test_numba_interaction_sum_matches_torch_with_first_and_second_derivatives(restore_kernels):
    sense, features, first, second = random_sums()
    results = {}
    for name in ("pytorch", "numba"):
        kernels.select_kernels(name)
        def interaction(s, f):
            return custom_kernels.envsum(s, f, first, second)
        # force training differentiates forces, themselves gradients: second order
        assert torch.autograd.gradcheck(interaction, (sense, features))
        assert torch.autograd.gradgradcheck(interaction, (sense, features))
        results[name] = interaction(sense, features).detach()
    assert custom_kernels.CUSTOM_KERNELS_ACTIVE == "numba"
    torch.testing.assert_close(results["numba"], results["pytorch"], rtol=1e-12, atol=1e-12)


def test_numba_kernels_give_the_potentials_energy_forces_and_stress(restore_kernels):
    potential = make_potential()
    atoms = cell_atoms()
    outputs = {}
    for name in ("pytorch", "numba"):
        kernels.select_kernels(name)
        outputs[name] = evaluate(potential, atoms, want_stress=True)
    for key in ("energy", "forces", "stress", "charges"):
        np.testing.assert_allclose(outputs["numba"][key], outputs["pytorch"][key], rtol=1e-10, atol=1e-10,
                                   err_msg=key)
    assert np.abs(outputs["pytorch"]["forces"]).max() > 1e-3  # forces that could differ


def test_numba_runs_on_as_many_threads_as_torch(restore_kernels):
    import numba

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        kernels.select_kernels("numba")
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_an_unknown_kernel_names_the_setting(restore_kernels):
    with pytest.raises(HipqeqError, match=f"{kernels.KERNELS_VARIABLE}.*available: .*numba"):
        kernels.select_kernels("no-such-kernel")
    assert custom_kernels.CUSTOM_KERNELS_ACTIVE == "_pytorch_raw"


@pytest.mark.parametrize("setting, active", [(None, "_pytorch_raw"), ("numba", "numba"), ("False", "_pytorch_raw")])
def test_the_environment_variable_chooses_the_kernels(setting, active):
    env = {key: value for key, value in os.environ.items() if key != kernels.KERNELS_VARIABLE}
    if setting is not None:
        env[kernels.KERNELS_VARIABLE] = setting
    script = "import hipqeq.models; from hippynn import custom_kernels as c; print(c.CUSTOM_KERNELS_ACTIVE)"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split()[-1] == active


@pytest.mark.parametrize("setting, layer", [(None, "workqueue"), ("omp", "omp")])
def test_numba_threads_idle_in_the_workqueue_layer_unless_told_otherwise(setting, layer):
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_THREADING_LAYER"}
    env[kernels.KERNELS_VARIABLE] = "numba"
    if setting is not None:
        env["NUMBA_THREADING_LAYER"] = setting
    script = "import hipqeq.models, numba; print(numba.threading_layer())"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split()[-1] == layer


FORKED_NEIGHBOUR_SEARCH = """
import multiprocessing
import torch
import hipqeq._hippynn as kernels
from hipqeq.qeq.neighbors import neighbor_pairs
torch.randn(300, 300) @ torch.randn(300, 300)  # the parent runs torch's OpenMP code

def child(queue):
    torch.set_num_threads(1)
    kernels.select_kernels("numba")
    positions = torch.rand(200, 3, dtype=torch.float64) * 12.0
    queue.put(len(neighbor_pairs(positions, torch.eye(3, dtype=torch.float64) * 12.0, (True,) * 3, 5.0)[0]))

if __name__ == "__main__":
    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=child, args=(queue,))
    process.start()
    print(queue.get(timeout=100))
    process.join()
"""


def test_numba_kernels_run_in_a_forked_worker(tmp_path):
    # numba's OpenMP layer hung here, in vesin's neighbour search after the fork
    script = tmp_path / "forked.py"
    script.write_text(FORKED_NEIGHBOUR_SEARCH)
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_THREADING_LAYER"}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 0
