"""Pixel-level faces: FCN parsing, HED edges and FSDS skeletons on one fully convolutional trunk.

* :mod:`~facemetric.dense.upsample` -- bilinear-initialised transposed convolution, Caffe crop
* :mod:`~facemetric.dense.trunk` -- the VGG-like trunk (any input size), receptive fields; the
  pretrained dlib face ResNet as a trunk (``model.trunk: dlib-resnet``)
* :mod:`~facemetric.dense.model` -- FCN-32s/16s/8s, HED and FSDS heads (:class:`DenseNet`)
* :mod:`~facemetric.dense.losses` -- per-pixel softmax with ignore label, HED's class-balanced
  sigmoid, FSDS's scale-associated softmax
* :mod:`~facemetric.dense.targets` -- boundaries, skeletons with scales, FSDS scale classes
* :mod:`~facemetric.dense.predict` -- a trained model with its card (``parse``)
"""

from facemetric.dense.model import DenseNet
from facemetric.dense.predict import DenseModel, dense_card

__all__ = ["DenseModel", "DenseNet", "dense_card"]
