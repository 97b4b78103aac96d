"""Start-up pacing: the cyclic garbage collector rests while the server imports torch and
transformers and loads the model; the survivors are then frozen and it resumes.

Those imports create hundreds of thousands of long-lived objects, and every full
collection during start-up walks all of them for nothing: with the collector paused,
`import torch; from transformers import VitsModel` took 3.2 s instead of 4.3-4.9 s on the
2-vCPU build VM (bench/RESULTS.md, cold start). `gc.freeze()` moves them to the permanent
generation, so collections after start-up skip them too.
"""

from __future__ import annotations

import gc

_paused = False


def pause_collector() -> None:
    """Called first thing by `voicefleet serve`, before the heavy imports."""
    global _paused
    _paused = gc.isenabled()
    gc.disable()


def resume_collector() -> None:
    """Called once the model has loaded (or failed to): a no-op unless start-up paused it."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
