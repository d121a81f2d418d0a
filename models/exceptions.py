"""Errors of the model registry and the scorer; all derive from :class:`ModelError` (an ``IvtError``).

Tree::

    IvtError                          (app.contracts.exceptions)
    ├── FeatureSpecError              (app.features.spec) vector/model disagrees with the feature spec
    └── ModelError                    anything wrong with a model version or its use
        ├── ModelNotFound             no such version in the registry (also a LookupError)
        ├── DuplicateModel            register() refused: the version already exists
        ├── ManifestError             manifest.json is missing a field, has an unknown one or a bad
        │                             value (also a ValueError); the message lists every problem
        ├── ModelIntegrityError       the bytes are not what the manifest says (sha256 mismatch,
        │                             missing model.onnx, folder name != manifest version)
        ├── IncompatibleModel         the ONNX graph does not fit its manifest or the engine
        │   │                         (input name/type/width, output name/kind, values out of range)
        │   └── FeatureMismatch       feature names/order/version differ from the engine's spec;
        │                             ALSO a FeatureSpecError, so either ``except`` catches it
        ├── ExportMismatch            an ONNX export disagrees with the model it was exported from
        └── ProviderUnavailable       an execution provider was asked for explicitly and cannot run

A live worker that catches :class:`ModelError` while hot-swapping keeps its current model; every
message says which version and what was expected against what was found.
"""

from __future__ import annotations

from app.contracts.exceptions import IvtError
from app.features.spec import FeatureSpecError

__all__ = [
    "ModelError",
    "ModelNotFound",
    "DuplicateModel",
    "ManifestError",
    "ModelIntegrityError",
    "IncompatibleModel",
    "FeatureMismatch",
    "ExportMismatch",
    "ProviderUnavailable",
]


class ModelError(IvtError):
    """Base class of model registry and scoring errors."""


class ModelNotFound(ModelError, LookupError):
    """The registry holds no such version."""


class DuplicateModel(ModelError):
    """A version with this name is already registered; versions are immutable."""


class ManifestError(ModelError, ValueError):
    """A manifest failed validation; the message lists every problem found."""


class ModelIntegrityError(ModelError):
    """Stored bytes differ from what the manifest promises (the message names expected vs actual)."""


class IncompatibleModel(ModelError):
    """The ONNX graph cannot be scored as its manifest describes."""


class FeatureMismatch(IncompatibleModel, FeatureSpecError):
    """The model's feature names, order or version differ from the engine's feature spec."""


class ExportMismatch(ModelError):
    """The ONNX export's outputs differ from the source model's beyond the tolerance."""


class ProviderUnavailable(ModelError):
    """An explicitly requested ONNX Runtime execution provider is not usable on this machine."""
