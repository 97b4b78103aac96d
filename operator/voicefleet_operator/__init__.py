"""voicefleet's Kubernetes operator: reconciles VoiceService resources into GPU server
Deployments, a Service, an HPA, a PodDisruptionBudget and an optional Redis, and guards
each pod's GPU memory. `voicefleet operator` runs it (see cli.py)."""
