"""`lets-glue` in this process, killed with SIGKILL at a chosen point, as a pre-empted job is (tests/test_resume.py).
Under `torchrun` every rank waits for the others to reach the point, then kills itself: the whole job dies there.

python tests/kill_worker.py none 0 -- <lets-glue flags>          # runs to the end
python tests/kill_worker.py after-save 2 -- <lets-glue flags>    # killed once checkpoint-2 is complete
python tests/kill_worker.py during-save 4 -- <lets-glue flags>   # killed while writing checkpoint-4
"""

import os
import signal
import sys

import torch
from transformers import Trainer

from glue_runs.run_glue import cli

mode, step = sys.argv[1], int(sys.argv[2])
flags = sys.argv[sys.argv.index("--") + 1 :]


def die() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank dies before every rank has done its part of the save
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at(method: str, before: bool) -> None:
    """SIGKILL this process when the Trainer's ``method`` runs at ``step`` (before or after it does its work)."""
    original = getattr(Trainer, method)

    def wrapper(self, *args, **kwargs):
        if before and self.state.global_step == step:
            die()
        result = original(self, *args, **kwargs)
        if not before and self.state.global_step == step:
            die()
        return result

    setattr(Trainer, method, wrapper)


if mode == "after-save":  # the checkpoint is complete: LETS state, weights, optimizer, RNG, trainer_state.json
    kill_at("_save_checkpoint", before=False)
elif mode == "during-save":  # weights and LETS state written, optimizer and trainer_state.json not
    kill_at("_save_optimizer_and_scheduler", before=True)
sys.argv = ["lets-glue", *flags]
cli()
