"""Real DDP on CPU: `torchrun --nproc_per_node 2` (gloo, use_cpu=True). After several steps both ranks hold the same
parameters and rho, equal to the single-process run the derivation names: batch 2b for a global perturbation, gradient
accumulation 2 x b for per-rank perturbations (and both with accumulation 2 on top)."""

import os
import subprocess
import sys

import pytest
import torch
from ddp_worker import DDP_CASES, HELDOUT_B, B, train

from lets_hf import LETSTrainingArguments

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        os.path.join(HERE, "ddp_worker.py"),
        str(out),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {name: [torch.load(out / f"{name}_rank{r}.pt") for r in (0, 1)] for name in DDP_CASES}


@pytest.mark.parametrize("name", list(DDP_CASES))
def test_ddp_equals_the_single_process_run(tmp_path, ddp_results, name):
    rank0, rank1 = ddp_results[name]
    assert rank0["world_size"] == rank1["world_size"] == 2  # really two processes
    assert rank0["rho"] == rank1["rho"] and rank0["hyper"] == rank1["hyper"]
    for key in rank0["params"]:
        assert torch.equal(rank0["params"][key], rank1["params"][key]), key

    overrides, n_accum = DDP_CASES[name]
    if overrides.get("sam_sync_perturbation", True):  # global perturbation: one process, batch 2b
        params, rho, hyper = train(str(tmp_path), overrides, n_accum, 2 * B, 2 * HELDOUT_B)
    else:  # per-rank perturbation: one process, gradient accumulation 2 x b
        params, rho, hyper = train(str(tmp_path), overrides, 2 * n_accum, B, 2 * HELDOUT_B)
    if overrides.get("lets", True):
        assert rho != LETSTrainingArguments.sam_rho  # the radius moved from its (default) start
    assert rank0["rho"] == pytest.approx(rho, rel=1e-6)
    # the values themselves: a sign step (the default optimizer) would hide a wrongly scaled hypergradient in rho
    assert rank0["hyper"] == pytest.approx(hyper, rel=1e-6, abs=1e-12)
    for key, value in params.items():
        torch.testing.assert_close(rank0["params"][key], value, rtol=0, atol=1e-6, msg=key)
