"""voicefleet_bench: load generator, benchmark helpers and reports for the voicefleet server.

`voicefleet bench` (cli) drives a running server with open-loop Poisson load (load) and
reports from client timings plus the server's own /metrics (metrics, stats, report). The
ratio scripts in bench/ reuse the same pieces plus a server launcher (harness) and a raw
transformers model loop (rawmodel).
"""

SCHEMA = "voicefleet-bench/1"
