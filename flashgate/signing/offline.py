"""Offline verification: the cluster's verdict on a release, with the artifact read from disk.

`flashgate verify` must give the verdict and reason the cluster will give, so it runs the very
functions the verifier sidecar runs, from the trust core alone:
- the key ring: `flashgate.trust.fleet.fleet_keyring` (endorsements re-verified against the roots
  and the spec, `revoked` and root-signed revocations only removing trust, a root never a tier
  key, a key endorsed for two tiers trusted for neither);
- the retired keys: `flashgate.trust.fleet.retired_names`, the rotation state machine as the
  operator computes it;
- docs/format.md steps 1-7 (`trust.verify_release`), then step 8's tail
  (`trust.check_artifact`) on the local file, read as the sidecar's fetcher reads: at most the
  signed size + 1 bytes, so a longer file reads as "more bytes than signed".
What the cluster does and this does not: fetch the release's URL (so no URL policy and no
ArtifactUnavailable here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from flashgate.api import FirmwareReleaseSpec
from flashgate.signing.files import hash_file
from flashgate.trust.fleet import (
    EndorsementCache,
    FleetKey,
    check_signing_key,
    expected_manifest,
    fleet_keyring,
    retired_names,
    signer_key_ids,
)
from flashgate.trust.keyring import KeyRecord
from flashgate.trust.release import Policy, check_artifact, final_verdict, verify_release
from flashgate.trust.vocabulary import Verdict


@dataclass(frozen=True)
class OfflineVerdict:
    """The verdict, and what was read of the artifact (None when steps 1-7 refused it unread).

    Attributes:
        verdict: Accepted, or rejected with the sidecar's reason and message.
        sha256: SHA-256 of the bytes read (at most the signed size + 1).
        size: How many bytes were read.
    """

    verdict: Verdict
    sha256: bytes | None = None
    size: int | None = None


def verify_offline(*, roots: Sequence[KeyRecord], policy: Policy, fleet: str,
                   release: FirmwareReleaseSpec, keys: Sequence[FleetKey], artifact: Path,
                   floor: int | None, now: int, progress: TextIO | None,
                   warn: Callable[[str], None]) -> OfflineVerdict:
    """The cluster's verdict on `release`, with `artifact` as the bytes behind its URL.

    Keys whose endorsement does not hold are reported through `warn` (the sidecar leaves them
    out of the key ring silently; a release they signed is then signed by an unknown key).

    Raises:
        UsageError: the artifact cannot be read.
    """
    cache = EndorsementCache()
    endorsed = {}
    for key in keys:
        check = check_signing_key(key.spec, fleet, roots, cache)
        endorsed[key.name] = check.accepted
        if not check.accepted:
            warn(f"SigningKey {key.name} is not trusted: {check.verdict.reason}: "
                 f"{check.verdict.message}")
    retired = retired_names([(k.name, k.spec, endorsed[k.name]) for k in keys], now)
    entries = [FleetKey(k.name, k.spec, retired=k.name in retired, revoked=k.revoked)
               for k in keys]
    expected = expected_manifest(fleet, release)
    ring = fleet_keyring(fleet, entries, roots, cache,
                         key_ids=signer_key_ids(release.signatures))
    for note in ring.left_out:
        warn(note)
    signed = verify_release(release.signatures, expected, ring.keyring, policy, floor, now)
    if not signed.accepted:
        return OfflineVerdict(signed)
    # One byte past the signed size, as the sidecar reads: it tells "longer" from "as signed".
    digest = hash_file(artifact, "--artifact", limit=expected.artifact_size + 1,
                       progress=progress)
    checked = check_artifact(expected, digest.size, digest.sha256,
                             oversized=digest.size > expected.artifact_size)
    return OfflineVerdict(final_verdict(signed, checked), digest.sha256, digest.size)
