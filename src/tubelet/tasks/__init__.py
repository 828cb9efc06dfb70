"""Per task: its loss, metrics and train/eval step."""

from tubelet.tasks.classification import ClassificationMeter, ClassificationTask

__all__ = ["ClassificationMeter", "ClassificationTask"]
