"""Helpers shared by the operator tests (imported by conftest.py and test modules; a
plain module because tests/ is not a package)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from voicefleet_operator import naming
from voicefleet_operator.config import OperatorConfig

NAMESPACE = "default"
VS_RESOURCE = f"{naming.GROUP}/{naming.VERSION}/{naming.PLURAL}"

ObjectGetter = Callable[[str, str], dict[str, Any]]

# Short loops keep the suite fast; the code paths are the production ones.
TEST_CONFIG = OperatorConfig(
    server_image="example.test/voicefleet-server:test",
    reconcile_interval=0.5,
    guard_interval=0.2,
    guard_cooldown=60.0,
    guard_timeout=0.5,
)


def voiceservice(name: str = "tts", **spec: Any) -> dict[str, Any]:
    """A VoiceService as a user would apply it (uid included: kopf.adopt needs one)."""
    spec.setdefault("model", {"variant": "facebook/mms-tts-eng"})
    return {
        "apiVersion": naming.API_VERSION,
        "kind": naming.KIND,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            # kopf guards its patches with a JSON-patch `test` of resourceVersion; the
            # emulator never sets one, so the object brings its own.
            "resourceVersion": "1",
        },
        "spec": spec,
    }


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll `check` until it returns something truthy without raising; return that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (KeyError, AssertionError, TypeError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            return check()  # raise or return the last state for the assertion message
        await asyncio.sleep(interval)
