"""Backbones, looked up by name in :data:`MODELS`."""

from facemetric.models import dlib_resnet as _dlib_resnet  # noqa: F401  ("dlib-resnet-29")
from facemetric.models import face_resnet as _face_resnet  # noqa: F401  ("face-resnet-20/36")
from facemetric.models import inception_resnet_v1 as _irv1  # noqa: F401  ("inception-resnet-v1")
from facemetric.models import iresnet as _iresnet  # noqa: F401  ("iresnet18/34/50/100")
from facemetric.models import lenets as _lenets  # noqa: F401  (registers "lenets++")
from facemetric.models import mobilefacenet as _mobilefacenet  # noqa: F401  ("mobilefacenet")
from facemetric.models.dlib_resnet import DlibResNet, load_dlib_resnet
from facemetric.models.face_resnet import FaceResNet
from facemetric.models.flops import count_flops, model_summary
from facemetric.models.inception_resnet_v1 import InceptionResNetV1
from facemetric.models.iresnet import IResNet
from facemetric.models.lenets import LeNetsPlusPlus
from facemetric.models.mobilefacenet import MobileFaceNet
from facemetric.models.registry import MODELS, build_model

__all__ = [
    "MODELS",
    "build_model",
    "LeNetsPlusPlus",
    "FaceResNet",
    "IResNet",
    "MobileFaceNet",
    "InceptionResNetV1",
    "DlibResNet",
    "load_dlib_resnet",
    "count_flops",
    "model_summary",
]
