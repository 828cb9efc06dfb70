"""Loops, checkpoints and run folders: the generic trainer (the jobs behind the commands are in
`tubelet.jobs`)."""

from tubelet.engine.checkpoint import load_model, save_model
from tubelet.engine.run import RunDir, seed_everything
from tubelet.engine.trainer import OptimConfig, Trainer, evaluate_loader

__all__ = [
    "OptimConfig",
    "RunDir",
    "Trainer",
    "evaluate_loader",
    "load_model",
    "save_model",
    "seed_everything",
]
