"""voicefleet: batched text-to-speech on Kubernetes (distribution namespace and CLI)."""
