"""`python -m tubelet` for tests that launch it with torchrun, with hooks for them.

- `TUBELET_TEST_WEIGHTS=DIR`: after training each process writes its weights to
  `DIR/rank{RANK}.safetensors` (the run folder holds rank 0's only), and the epoch each attempt
  resumed from to `DIR/resumed.txt` (a line "attempt rank epoch").
"""

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from tubelet.engine.trainer import Trainer

ATTEMPT = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
OUT = Path(os.environ["TUBELET_TEST_WEIGHTS"])
_fit, _resume = Trainer.fit, Trainer._resume


def fit(self):
    summary = _fit(self)
    state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
    save_file(state, str(OUT / f"rank{self.env.rank}.safetensors"))
    return summary


def resume(self):
    _resume(self)
    with open(OUT / "resumed.txt", "a") as f:
        f.write(f"{ATTEMPT} {self.env.rank} {self.epoch}\n")


if __name__ == "__main__":
    Trainer.fit, Trainer._resume = fit, resume
    from tubelet.cli.main import main

    sys.argv[0] = "tubelet"
    main()
