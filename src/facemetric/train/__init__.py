"""Training: trainer loop, optimizers, schedules, EMA, checkpoints and run directories.

``run_experiment(config_path, overrides=[...])`` is the Python twin of ``facemetric train``.
"""

from facemetric.train.config import load_config
from facemetric.train.experiment import TrainResult, build_experiment, run_experiment
from facemetric.train.trainer import Trainer

__all__ = ["load_config", "build_experiment", "run_experiment", "TrainResult", "Trainer"]
