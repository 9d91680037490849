"""A TLS server's own certificate, loaded again when its files change.

cert-manager (or the chart's certgen hook) renews a serving certificate by rewriting its Secret;
the kubelet updates the mounted files in place. The admission webhook and the delivery service
both look at their certificate and key every `RELOAD_SECONDS` and load a changed pair into the
live `ssl.SSLContext`: new connections get the new certificate, open ones keep theirs, and a
renewal needs no restart.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

log = logging.getLogger("flashgate.tls")

RELOAD_SECONDS = 30.0

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _contents(cert_file: Path, key_file: Path) -> bytes:
    try:
        return cert_file.read_bytes() + key_file.read_bytes()
    except OSError:
        return b""


async def reload_when_changed(context: ssl.SSLContext, cert_file: Path, key_file: Path,
                              what: str, every: float = RELOAD_SECONDS) -> None:
    """Forever: load the pair into `context` whenever its files change. A pair that does not
    load (caught mid-update) is tried again at the next look, the old one served meanwhile."""
    loaded = _contents(cert_file, key_file)
    while True:
        await asyncio.sleep(every)
        current = _contents(cert_file, key_file)
        if current == loaded or not current:
            continue
        try:
            # Tried on a scratch context first: a failed load must not leave `context` half set.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file,
                                                                                key_file)
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as error:
            log.warning("%s: the new certificate %s does not load yet: %s", what, cert_file,
                        error)
            continue
        loaded = current
        log.info("%s serves the new certificate %s", what, cert_file)


def reloading(context: ssl.SSLContext, cert_file: Path, key_file: Path, what: str,
              every: float = RELOAD_SECONDS) -> CleanupContext:
    """An aiohttp cleanup context that runs `reload_when_changed` while the application runs."""

    async def run(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(reload_when_changed(context, cert_file, key_file, what,
                                                       every))
        yield
        task.cancel()

    return run
