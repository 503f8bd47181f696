"""Data: datasets, samplers (and their name registry :data:`SAMPLERS`), pair protocols (with
the one fold splitter :func:`consecutive_folds`), the embedded digits set."""

from facemetric.data.cache import (
    CachedImageDataset,
    ImageFileDataset,
    build_image_cache,
    cache_info,
)
from facemetric.data.folder import IdentityFolder, read_people_file, read_people_sets
from facemetric.data.image_io import IMAGE_EXTENSIONS, read_image
from facemetric.data.protocols import (
    PairSet,
    consecutive_folds,
    generate_folder_pairs,
    read_bin_pairs,
    read_lfw_pairs,
    write_lfw_pairs,
)
from facemetric.data.samplers import SAMPLERS, PKBatchSampler, UniformBatchSampler
from facemetric.data.transforms import (
    PRESETS,
    Preprocessing,
    decode_and_resize,
    flip_tensor,
    preprocess,
    random_crop,
    random_flip,
    to_tensor,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "SAMPLERS",
    "CachedImageDataset",
    "IdentityFolder",
    "ImageFileDataset",
    "PKBatchSampler",
    "PairSet",
    "Preprocessing",
    "build_image_cache",
    "cache_info",
    "consecutive_folds",
    "decode_and_resize",
    "flip_tensor",
    "generate_folder_pairs",
    "preprocess",
    "random_crop",
    "random_flip",
    "read_bin_pairs",
    "read_image",
    "read_lfw_pairs",
    "read_people_file",
    "read_people_sets",
    "to_tensor",
    "UniformBatchSampler",
    "write_lfw_pairs",
]
