"""Training runs below the workflow layer: fit, callbacks, checkpoint, distribution, soft-label cache.

Nothing here imports MLflow or click; ``keras_advseg.workflows.train`` wraps a
run in MLflow tracking.
"""

from keras_advseg.errors import CheckpointExists, TrainingError
from keras_advseg.training.checkpoint import read_state, start_epoch
from keras_advseg.training.distribute import make_strategy, worker_role
from keras_advseg.training.fit import (
    TrainResult,
    build_network,
    build_trainer,
    deployable,
    fit,
    learning_rate,
    training_loss,
    warm_start,
)
from keras_advseg.training.soft_labels import write_soft_labels

__all__ = [
    "CheckpointExists",
    "TrainResult",
    "TrainingError",
    "build_network",
    "build_trainer",
    "deployable",
    "fit",
    "learning_rate",
    "make_strategy",
    "read_state",
    "start_epoch",
    "training_loss",
    "warm_start",
    "worker_role",
    "write_soft_labels",
]
