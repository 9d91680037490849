"""Fixtures of the signing station tests: one SoftHSM2 token per session, made at test time."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .softhsm import SoftHsm, init_softhsm


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    hsm = init_softhsm(tmp_path_factory.mktemp("softhsm"))
    # python-pkcs11 loads the module once per process and SoftHSM2 reads its config then: the
    # in-process tests all use this one token.
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    yield hsm
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved
