"""The flashgate Kubernetes API (ota.flashgate.dev/v1alpha1): one kind a module, and CRD generation.

:mod:`.schema` holds what the kinds share; :mod:`.crdgen` writes ``crds/`` from the models.
"""

from flashgate.api.firmwarerelease import (
    Artifact,
    FirmwareRelease,
    FirmwareReleaseConditionType,
    FirmwareReleaseSpec,
    FirmwareReleaseStatus,
    ReleasePhase,
    Republish,
)
from flashgate.api.revocationlist import (
    REVOCATION_LIST_NAME,
    RevocationList,
    RevocationListSpec,
    RevokedKey,
)
from flashgate.api.rollbackfloor import (
    Publication,
    RollbackFloor,
    RollbackFloorSpec,
    RollbackFloorStatus,
    rollback_floor_name,
)
from flashgate.api.schema import (
    API_VERSION,
    DEFAULT_CHANNEL,
    GROUP,
    MAX_SECURITY_VERSION,
    PATTERN_MESSAGE,
    VERSION,
    Condition,
    ConditionStatus,
    Resource,
)
from flashgate.api.signingkey import (
    SigningKey,
    SigningKeyConditionType,
    SigningKeySpec,
    SigningKeyStatus,
)
from flashgate.trust.rotation import DEFAULT_OVERLAP, KeyPhase
from flashgate.trust.vocabulary import Algorithm, Reason, Tier

RESOURCES: tuple[type[Resource], ...] = (
    SigningKey,
    FirmwareRelease,
    RollbackFloor,
    RevocationList,
)
"""The kinds of the API, in the order their CRDs are written."""

__all__ = [
    "API_VERSION",
    "DEFAULT_CHANNEL",
    "DEFAULT_OVERLAP",
    "GROUP",
    "MAX_SECURITY_VERSION",
    "PATTERN_MESSAGE",
    "RESOURCES",
    "REVOCATION_LIST_NAME",
    "VERSION",
    "Algorithm",
    "Artifact",
    "Condition",
    "ConditionStatus",
    "FirmwareRelease",
    "FirmwareReleaseConditionType",
    "FirmwareReleaseSpec",
    "FirmwareReleaseStatus",
    "KeyPhase",
    "Publication",
    "Reason",
    "ReleasePhase",
    "Republish",
    "Resource",
    "RevocationList",
    "RevocationListSpec",
    "RevokedKey",
    "RollbackFloor",
    "RollbackFloorSpec",
    "RollbackFloorStatus",
    "SigningKey",
    "SigningKeyConditionType",
    "SigningKeySpec",
    "SigningKeyStatus",
    "Tier",
    "rollback_floor_name",
]
