"""Data layer: records, unlearning splits, transforms, loaders and dataset readers."""

from dlfd.data.loaders import ProblemLoaders
from dlfd.data.manifest import imagefolder_records, read_manifest
from dlfd.data.orl import orl_records
from dlfd.data.problem import SPLITS, UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.data.splits import (
    apply_forget_request,
    identity_split,
    instance_split,
    read_forget_list,
    resolve_forget_request,
)
from dlfd.data.transforms import AugmentConfig, BatchTransform, InputSpec

__all__ = [
    "SPLITS",
    "AugmentConfig",
    "BatchTransform",
    "ImageRecords",
    "InputSpec",
    "ProblemLoaders",
    "UnlearningProblem",
    "apply_forget_request",
    "identity_split",
    "imagefolder_records",
    "instance_split",
    "orl_records",
    "read_forget_list",
    "read_manifest",
    "resolve_forget_request",
]
