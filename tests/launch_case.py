"""`python -m tubelet` for tests that launch it with torchrun, with hooks for them.

- `TUBELET_TEST_WEIGHTS=DIR`: after training each process writes its weights to
  `DIR/rank{RANK}.safetensors` (the run folder holds rank 0's only), and the epoch each attempt
  resumed from to `DIR/resumed.txt` (a line "attempt rank epoch").
- `TUBELET_TEST_KILL=1`: in torchrun's first attempt, rank 1 kills itself (SIGKILL) in the middle
  of epoch 2, after its second optimizer step.
"""

import os
import signal
import sys
from pathlib import Path

from safetensors.torch import save_file

from tubelet.engine.trainer import Trainer

ATTEMPT = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
OUT = Path(os.environ["TUBELET_TEST_WEIGHTS"])
KILL = os.environ.get("TUBELET_TEST_KILL") == "1"
_fit, _resume, _step = Trainer.fit, Trainer._resume, Trainer._step


def fit(self):
    summary = _fit(self)
    state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
    save_file(state, str(OUT / f"rank{self.env.rank}.safetensors"))
    return summary


def resume(self):
    _resume(self)
    with open(OUT / "resumed.txt", "a") as f:
        f.write(f"{ATTEMPT} {self.env.rank} {self.epoch}\n")


def step(self):
    _step(self)
    in_epoch = self.scheduler.last_epoch - self.epoch * self.steps_per_epoch
    if KILL and ATTEMPT == 0 and self.env.rank == 1 and self.epoch == 1 and in_epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    Trainer.fit, Trainer._resume, Trainer._step = fit, resume, step
    from tubelet.cli.main import main

    sys.argv[0] = "tubelet"
    main()
