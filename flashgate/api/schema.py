"""What the three kinds of the flashgate API share: names, limits, patterns, the base models,
conditions, and the CRD metadata each kind declares.

The API (group ``ota.flashgate.dev``, version ``v1alpha1``) is modelled in pydantic, one kind a
module (:mod:`.signingkey`, :mod:`.firmwarerelease`, :mod:`.rollbackfloor`,
:mod:`.revocationlist`). The models are the single source of the CustomResourceDefinitions in
``crds/``: ``python -m flashgate.api.crdgen`` turns them into CRD YAML and does nothing else, so
every description, limit, default, CEL rule (``x-kubernetes-validations``) and printer column
lives in the models. Field descriptions are what ``kubectl explain`` prints; they say what a
field means, its default, its limits and units, and what it cannot be combined with.

Every kind is namespaced: a namespace is a fleet.

Code uses the same models to read and write objects::

    spec = FirmwareReleaseSpec.model_validate(body["spec"])
    patch = status.to_k8s()   # JSON-ready, camelCase keys, unset fields left out

Python names are snake_case; the Kubernetes names (camelCase) are aliases, and both are accepted
on input. Timestamps are timezone-aware ``datetime`` objects in Python and RFC 3339 strings (UTC,
``Z``) on the wire. Enumerations are the trust core's ``DocEnum`` subclasses (`Tier`,
`Algorithm`, `Reason`, `KeyPhase`) or declared beside their kind, so members compare equal to
their string values and each value is documented.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from flashgate.trust.cose import MAX_ENVELOPE_BYTES
from flashgate.trust.release import MAX_SIGNATURES
from flashgate.trust.vocabulary import DocEnum

GROUP = "ota.flashgate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "flashgate"

# Limits shared by several fields: the wire format's own (trust) and the API's.
MAX_ENVELOPE_BASE64 = 4 * ((MAX_ENVELOPE_BYTES + 2) // 3)
"""Length of the padded base64 of a :data:`MAX_ENVELOPE_BYTES` envelope (21848 characters)."""
MAX_DOCUMENT_CHARS = 64 * 1024
"""Largest job document kept in a ledger: 16 envelopes of ~300 bytes fit many times over."""
MAX_SECURITY_VERSION = 2**32 - 1
"""Largest securityVersion: it must fit a device's 32-bit secure counter."""
DEFAULT_CHANNEL = "stable"

# Patterns: RE2 syntax, the common subset of Go's regexp (the API server) and Rust's regex crate
# (pydantic-core), so both sides refuse exactly the same strings.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
SHA256_HEX_PATTERN = r"^[0-9a-f]{64}$"
PEM_PUBLIC_KEY_PATTERN = (
    r"^-----BEGIN PUBLIC KEY-----\r?\n(?:[A-Za-z0-9+/=]+\r?\n)+-----END PUBLIC KEY-----\r?\n?$"
)
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
ARTIFACT_URL_PATTERN = r"^(?:https|s3|file)://[^\s]+$"
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
VERSION_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z.+_~-]*$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

def _rfc3339(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a ``Z`` (fraction only when non-zero)."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(_rfc3339, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
"""An RFC 3339 date-time with a time zone; a ``datetime`` in Python, a ``Z`` string on the wire."""

class _Model(BaseModel):
    """Base of every API model: camelCase aliases, snake_case names, both accepted on input."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    def to_k8s(self) -> dict[str, Any]:
        """This object as Kubernetes JSON: camelCase keys, unset fields left out, plain values."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _StatusModel(_Model):
    """Status models ignore fields they do not know (Kopf may keep its own state in status)."""

    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry of a CRD (what ``kubectl get`` shows)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0


AGE_COLUMN = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")
"""The last column of every kind, as kubectl shows it for built-in kinds."""


@dataclass(frozen=True)
class CRDNames:
    """How a kind is served: its names, categories and printer columns."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = (CATEGORY,)
    # Fields `kubectl get --field-selector` may filter on (the API server filters: a fleet's
    # Rejected releases are listed without reading its tens of thousands of others).
    selectable_fields: tuple[str, ...] = ()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


class Resource(_Model):
    """Base of the kinds: a Kubernetes object with a spec (and a status), served as ``crd``.

    apiVersion and kind default to this kind's (the CRD generator writes their standard schema
    whatever is said here); metadata is the standard object metadata, unmodelled.
    """

    model_config = ConfigDict(extra="ignore")
    crd: ClassVar[CRDNames]

    api_version: str = Field(default=API_VERSION, description="ota.flashgate.dev/v1alpha1")
    kind: str = Field(default="", description="The kind's name.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")

    def model_post_init(self, context: Any, /) -> None:
        if not self.kind:
            self.kind = self.crd.kind


def _immutable(field: str, hint: str) -> dict[str, Any]:
    """A field-level CEL transition rule refusing any change of the field."""
    return {"rule": "self == oldSelf", "message": f"{field} is immutable: {hint}"}


PATTERN_MESSAGE = "x-flashgate-pattern-message"
"""Schema keyword read by the CRD generator: it turns the field's ``pattern`` into a CEL rule
``self.matches(pattern)`` with this message, so that the API server explains a malformed value
in words (a bare ``pattern`` is reported as "should match '^[0-9a-f]{64}$'"). Python validation
keeps the pattern as it is."""


def _cel(*rules: dict[str, Any], pattern_message: str | None = None) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules and, optionally, the message of the pattern."""
    extra: dict[str, Any] = {}
    if rules:
        extra["x-kubernetes-validations"] = list(rules)
    if pattern_message is not None:
        extra[PATTERN_MESSAGE] = pattern_message
    return extra


_DNS_LABEL_WORDS = (
    "a DNS label: 1 to 63 lowercase letters, digits and '-', starting and ending with a letter "
    "or digit"
)


class ConditionStatus(DocEnum):
    """The status of a condition (as metav1.ConditionStatus)."""

    TRUE = "True", "the condition holds."
    FALSE = "False", "the condition does not hold; reason and message say why."
    UNKNOWN = "Unknown", "not determined yet."


_EnvelopeBase64 = Annotated[
    str,
    Field(
        min_length=4,
        max_length=MAX_ENVELOPE_BASE64,
        pattern=BASE64_PATTERN,
        description="One signature: standard base64 (with padding) of a COSE_Sign1 envelope.",
        json_schema_extra=_cel(
            pattern_message="each signature must be standard base64 with padding of a "
            "COSE_Sign1 envelope, as `flashgate sign` writes it"
        ),
    ),
]
_KeyIdHex = Annotated[
    str,
    Field(
        min_length=64,
        max_length=64,
        pattern=SHA256_HEX_PATTERN,
        description="A keyId: SHA-256 of a SubjectPublicKeyInfo, 64 lowercase hex digits.",
    ),
]

_OBSERVED_GENERATION = (
    "The metadata.generation of the object when the operator last evaluated it; when it is "
    "below metadata.generation this status describes an older spec."
)


class Condition(_StatusModel):
    """One observation of an object's state, as metav1.Condition; lists are keyed by type."""

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description="The aspect observed, in CamelCase; each kind documents its types.",
    )
    status: ConditionStatus = Field(description="Whether the condition holds.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description=(
            "The metadata.generation the condition was computed from; when it is below "
            "metadata.generation the condition is stale."
        ),
    )
    last_transition_time: Timestamp = Field(
        description=(
            "When status last changed (not when the condition was last checked), RFC 3339."
        ),
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
        description=(
            "Why the condition has this status: a CamelCase word for machines, e.g. "
            "RollbackRejected. 1 to 1024 characters."
        ),
    )
    message: str = Field(
        default="",
        max_length=32768,
        description=(
            "Why the condition has this status, for people: what was expected and what was "
            "observed. May be empty; at most 32768 characters."
        ),
    )


def _conditions_field(types: type[DocEnum]) -> Any:
    values = "\n".join(f"- {member.value}: {member.description}" for member in types)
    return Field(
        default_factory=list,
        description=(
            "The latest observations of the object, at most one per type (a list keyed by "
            f"type), written by the operator. Types:\n{values}"
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


__all__ = [
    "API_VERSION",
    "BASE64_PATTERN",
    "CATEGORY",
    "DEFAULT_CHANNEL",
    "DNS_LABEL_PATTERN",
    "DNS_SUBDOMAIN_PATTERN",
    "GROUP",
    "MAX_DOCUMENT_CHARS",
    "MAX_ENVELOPE_BASE64",
    "MAX_ENVELOPE_BYTES",
    "MAX_SECURITY_VERSION",
    "MAX_SIGNATURES",
    "PATTERN_MESSAGE",
    "VERSION",
    "CRDNames",
    "Condition",
    "ConditionStatus",
    "PrinterColumn",
    "Resource",
    "Timestamp",
]


def problems(exc: ValidationError, *, prefix: str = "", whole: str = "",
             limit: int | None = None) -> list[str]:
    """Each problem pydantic found, as `path: message` (the path after `prefix`; `whole` when
    the document itself is wrong), the first `limit` of them: one wording for every place that
    tells a person why a document was refused."""
    return [f"{prefix}{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}"
            for e in exc.errors(include_input=False)[:limit]]
