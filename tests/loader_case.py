"""`tubelet train` commands under torchrun that, instead of training, record what each process's
loaders would yield.

`python loader_case.py OUT COMMANDS_JSON`: for the i-th command line of the JSON list, every
process writes the item indices of two training epochs and of one evaluation to
`OUT/i/rank{RANK}.json`, then goes on to the next command.
"""

import contextlib
import json
import sys
from pathlib import Path

from tubelet.data.loader import process_group
from tubelet.engine.trainer import Trainer


class Recorded(Exception):
    """Raised in place of building the trainer, once the loaders' items are written."""


def index(item):
    return item[1] if isinstance(item, tuple) else item


def record_to(out: Path):
    def record(self, model, task, *, train_loader, val_loader, **kwargs):
        rank, world = process_group()
        epochs = []
        for epoch in (0, 1):
            for obj in (train_loader.sampler, train_loader.dataset):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)
            # A training loader asks for (epoch, index) pairs (`tubelet.data.loader.EpochItems`).
            epochs.append([index(i) for batch in train_loader.batch_sampler for i in batch])
        items = {
            "world": world, "train_size": len(train_loader.dataset), "epochs": epochs,
            "val_size": len(val_loader.dataset),
            "val": [index(i) for batch in val_loader.batch_sampler for i in batch],
        }  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{rank}.json").write_text(json.dumps(items))
        raise Recorded

    return record


if __name__ == "__main__":
    from tubelet.cli.main import app

    root, commands = Path(sys.argv[1]), json.loads(sys.argv[2])
    for i, command in enumerate(commands):
        Trainer.__init__ = record_to(root / str(i))
        with contextlib.suppress(Recorded):
            app(command, standalone_mode=False)
