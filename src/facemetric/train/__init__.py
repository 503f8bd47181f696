"""Training: trainer loop, optimizers, schedules, EMA, checkpoints, run directories, the data
sources of recipes and the experiment that wires them.

``run_experiment(config_path, overrides=[...])`` is the Python twin of ``facemetric train``.
"""

from facemetric.train.config import load_config
from facemetric.train.data_sources import DATA_SOURCES, DataBundle
from facemetric.train.experiment import TrainResult, build_experiment, run_experiment
from facemetric.train.trainer import Trainer

__all__ = [
    "DATA_SOURCES",
    "DataBundle",
    "Trainer",
    "TrainResult",
    "build_experiment",
    "load_config",
    "run_experiment",
]
