"""`voicefleet operator`: kopf's flags pass through, and the real entry point (kubeconfig
login, our handlers preloaded) reconciles a VoiceService on kmock's emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import kmock as km
import pytest
from operator_helpers import NAMESPACE, ObjectGetter, eventually, voiceservice
from voicefleet_operator.cli import operator_main

pytestmark = pytest.mark.timeout(30)


def test_help_lists_kopf_run_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert operator_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "voicefleet operator" in out
    for flag in ("--namespace", "--all-namespaces", "--standalone", "--verbose", "--liveness",
                 "--peering"):
        assert flag in out


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert operator_main(["--no-such-flag"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_both_namespace_modes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert operator_main(["-n", "default", "-A"]) == 2
    assert "not both" in capsys.readouterr().err


async def test_console_script_reconciles_against_the_emulator(
    emulator: km.KubernetesEmulator, kubeconfig: Path, get_object: ObjectGetter
) -> None:
    script = Path(sys.executable).parent / "voicefleet"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "VOICEFLEET_SERVER_IMAGE": "example.test/cli:1",
        "VOICEFLEET_RECONCILE_INTERVAL_SECONDS": "0.5",
        # kmock cannot serve /api/v1/namespaces, which kopf's scanning lists.
        "VOICEFLEET_CLUSTER_SCANNING": "false",
    }
    process = await asyncio.create_subprocess_exec(
        str(script), "operator", "--standalone", "--namespace", NAMESPACE,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        path = f"/apis/voicefleet.dev/v1alpha1/namespaces/{NAMESPACE}/voiceservices"
        async with emulator.request("POST", path, json=voiceservice()) as response:
            assert response.status == 200
        deployment = await eventually(
            lambda: get_object("apps/v1/deployments", "tts"), timeout=20
        )
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "example.test/cli:1"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout=15)
        except TimeoutError:
            process.kill()
            output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()[-3000:]
