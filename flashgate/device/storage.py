"""A device's persistent state as files, standing in for its hardware: the trust store, a secure
counter per tier (a fuse or RPMB counter), A/B slots per tier with their boot control block (which
also is the installed-state record), a staging area, and the last status it reported.

    <stateDir>/trust-store.json         the trust store (flashgate.trust.device.TrustStore)
    <stateDir>/status.json              the last rejection, kept across restarts
    <stateDir>/<tier>/counter           the secure counter: a decimal number, only ever raised
    <stateDir>/<tier>/boot.json         boot control: active slot, pending slot, what each holds
    <stateDir>/<tier>/slot-a.img        slot A
    <stateDir>/<tier>/slot-b.img        slot B
    <stateDir>/staging/<tier>.part      a download being checked: never a slot

Every small file is replaced atomically (written aside, fsynced, renamed over, the directory
fsynced): a power cut leaves the old content or the new, never a mix. A slot image is written in
place, as flash is, so a cut during the write leaves that slot half written; the boot control
block says which slots hold a complete, verified image, and it is updated only before (the slot
is marked empty) and after (the slot is described) the write, never during.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

from flashgate.trust.device import TrustStore

log = logging.getLogger("flashgate.device")

Slot = Literal["a", "b"]
CHUNK = 1 << 20


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: all of it or none of it, even across a power cut."""
    aside = path.with_name(path.name + ".new")
    with open(aside, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(aside, path)
    sync_directory(path.parent)


def sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def file_sha256(path: Path, limit: int) -> tuple[int, bytes]:
    """(size, SHA-256) of the first `limit` + 1 bytes of a file (its whole content, if that
    is all it has)."""
    digest, got = hashlib.sha256(), 0
    with open(path, "rb") as file:
        while got <= limit:
            chunk = file.read(min(CHUNK, limit + 1 - got))
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
    return got, digest.digest()


class TrustStoreFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> TrustStore:
        """The stored trust store; an empty one (the roots only) when there is none or it cannot
        be read: the next bundle fills it again (a device loses nothing it cannot get back but
        revocations of keys it was never told of, which no bundle of now still needs)."""
        try:
            return TrustStore.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return TrustStore()
        except (OSError, ValueError) as exc:
            log.error("trust store %s unreadable, starting from the roots alone: %s",
                      self.path, exc)
            return TrustStore()

    def save(self, store: TrustStore) -> None:
        write_json(self.path, store.to_json())


class SecureCounter:
    """A monotonic counter (a fuse bank or an RPMB counter on real hardware): read, and raised;
    lowering it is not an operation it has."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int:
        try:
            return int(self.path.read_text().strip())
        except FileNotFoundError:
            return 0

    def raise_to(self, value: int) -> None:
        if value > self.read():
            write_atomic(self.path, f"{value}\n".encode())


@dataclass(frozen=True)
class Image:
    """What a slot holds, as verified before it was written."""

    image_sha256: str
    size: int
    release: str | None = None  # None: the factory image
    version: str = ""
    security_version: int = 0
    manifest_sha256: str | None = None  # the signed manifest installed (None: factory)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BootControl:
    """The boot control block of one tier: the slot that boots, the slot to try next (once
    switched, before it is confirmed), and what each slot holds (None: nothing usable)."""

    active: Slot = "a"
    pending: Slot | None = None
    slots: dict[str, Image | None] = field(default_factory=lambda: {"a": None, "b": None})

    @property
    def inactive(self) -> Slot:
        return "b" if self.active == "a" else "a"

    @property
    def installed(self) -> Image | None:
        return self.slots[self.active]

    def to_json(self) -> dict[str, Any]:
        return {"active": self.active, "pending": self.pending,
                "slots": {k: v.to_json() if v else None for k, v in self.slots.items()}}

    @classmethod
    def from_json(cls, data: Any) -> BootControl:
        return cls(data["active"], data["pending"],
                   {k: Image(**v) if v else None for k, v in data["slots"].items()})


class TierSlots:
    """The A/B slots of one tier and their boot control block.

    Installing is: `begin` (the inactive slot is marked empty), `write` (the image goes into it),
    `switch` (the slot is described and made pending), `boot` (the pending slot is verified as
    a bootloader would), `confirm` (it becomes the active slot). The active slot is never
    written.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.control_path = directory / "boot.json"
        self.control = BootControl()

    def image_path(self, slot: str) -> Path:
        return self.directory / f"slot-{slot}.img"

    def load(self, factory: bytes) -> None:
        """Read the boot control block; on first start, provision the factory image in slot A."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.control_path.exists():
            self.control = BootControl.from_json(json.loads(self.control_path.read_text()))
            return
        write_atomic(self.image_path("a"), factory)
        self.image_path("b").write_bytes(b"")
        self._save(BootControl(slots={"a": Image(hashlib.sha256(factory).hexdigest(),
                                                 len(factory)), "b": None}))

    def _save(self, control: BootControl) -> None:
        write_json(self.control_path, control.to_json())
        self.control = control

    def verifies(self, slot: str) -> bool:
        """The slot holds exactly the image its description says (a bootloader's check)."""
        image = self.control.slots.get(slot)
        if image is None:
            return False
        size, digest = file_sha256(self.image_path(slot), image.size)
        return size == image.size and digest.hex() == image.image_sha256

    def begin(self) -> Slot:
        """Mark the inactive slot empty before anything is written to it; returns it."""
        slot = self.control.inactive
        self._save(replace(self.control, pending=None,
                           slots={**self.control.slots, slot: None}))
        return slot

    def write(self, slot: Slot, staging: Path, halfway: Callable[[], None] = lambda: None
              ) -> None:
        """Copy the staged image into `slot` (never the active one), in place, as to flash;
        `halfway` runs when half of it is written (a crash point)."""
        if slot == self.control.active or self.control.slots[slot] is not None:
            raise RuntimeError(f"slot {slot} is not an emptied inactive slot")
        half = staging.stat().st_size // 2
        with open(staging, "rb") as source, open(self.image_path(slot), "wb") as target:
            _copy(source, target, half)
            target.flush()
            halfway()
            _copy(source, target, None)
            target.flush()
            os.fsync(target.fileno())

    def switch(self, slot: Slot, image: Image) -> None:
        """Describe the written slot and make it the one to try at the next boot."""
        self._save(replace(self.control, pending=slot,
                           slots={**self.control.slots, slot: image}))

    def boot(self) -> bool:
        """Boot as the bootloader would: a pending slot that verifies runs (on trial, until
        `confirm`); one that does not is dropped and the active slot runs on. True when the
        pending slot runs."""
        pending = self.control.pending
        if pending is None:
            return False
        if self.verifies(pending):
            return True
        log.error("%s: slot %s does not verify; staying on slot %s", self.directory, pending,
                  self.control.active)
        self._save(replace(self.control, pending=None,
                           slots={**self.control.slots, pending: None}))
        return False

    def confirm(self) -> None:
        """The pending slot runs well: it becomes the active slot."""
        pending = self.control.pending
        if pending is None:
            raise RuntimeError("no pending slot to confirm")
        self._save(replace(self.control, active=pending, pending=None))


def _copy(source: BinaryIO, target: BinaryIO, count: int | None) -> None:
    """`count` bytes (None: the rest) from source to target."""
    left = count
    while left is None or left > 0:
        chunk = source.read(CHUNK if left is None else min(CHUNK, left))
        if not chunk:
            return
        target.write(chunk)
        if left is not None:
            left -= len(chunk)


class StatusFile:
    """The last rejection, kept across restarts so that the device keeps reporting it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        rejection = data.get("lastRejection") if isinstance(data, dict) else None
        return rejection if isinstance(rejection, dict) else None

    def save(self, rejection: dict[str, Any] | None) -> None:
        write_json(self.path, {"lastRejection": rejection})
