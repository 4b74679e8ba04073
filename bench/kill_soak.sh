#!/usr/bin/env bash
# Kill soak: trains one run while killing it with SIGKILL at random moments (mid-step, mid-save,
# mid-start-up), restarting it each time, then lets it finish and compares it with the same run
# trained without interruption. Prints the counts:
#   kills            SIGKILLs delivered to a live trainer
#   corrupt          restarts where ckpt/latest named a missing or damaged checkpoint (`eval` refused it)
#   lost_steps       checkpointed steps lost: the latest checkpoint's step went backwards after a kill
#   weight_mismatch  final weight files that differ, byte for byte, from the uninterrupted run's
#   log_mismatch     1 when the logged training losses differ from the uninterrupted run's
#
#   bench/kill_soak.sh [KILLS (100)] [STEPS (4000)]     from the repository root, after the build
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exe=${EDGEFORGE_CLI:-$root/build/cli/edgeforge}
kills_wanted=${1:-100}
steps=${2:-4000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
config=$root/tasks/classify.tiny.json
set_args=(--set "train.steps=$steps" --set train.ckpt_every=5 --set train.log_every=5 --set train.keep_last=2 --set train.grad_accum=1 --quiet)

"$exe" train "$config" --run-dir reference "${set_args[@]}" > /dev/null 2>&1

latest_step() {  # the step ckpt/latest names, or -1
  if [ -f soak/ckpt/latest ]; then sed -n 's/^step_\([0-9]*\)$/\1/p' soak/ckpt/latest; else echo -1; fi
}

kills=0 corrupt=0 lost=0 last=-1
RANDOM=7
while [ "$kills" -lt "$kills_wanted" ]; do
  if [ -f soak/final.json ]; then break; fi
  "$exe" train "$config" --run-dir soak "${set_args[@]}" > /dev/null 2>&1 &
  pid=$!
  sleep "$(printf '0.%03d' $((RANDOM % 400)))"
  if kill -9 "$pid" 2> /dev/null; then kills=$((kills + 1)); fi
  wait "$pid" 2> /dev/null || true
  now=$(latest_step)
  if [ "$now" != -1 ]; then
    "$exe" eval soak > /dev/null 2>&1 || corrupt=$((corrupt + 1))
    if [ "$now" -lt "$last" ]; then lost=$((lost + last - now)); fi
    last=$now
  fi
done
"$exe" train "$config" --run-dir soak "${set_args[@]}" > /dev/null 2>&1

final=step_$steps
mismatch=0
for f in reference/ckpt/$final/*.safetensors; do
  cmp -s "$f" "soak/ckpt/$final/$(basename "$f")" || mismatch=$((mismatch + 1))
done
losses() { grep -o '"train/loss":[^,}]*' "$1/metrics.jsonl"; }
log_mismatch=0
[ "$(losses reference)" = "$(losses soak)" ] || log_mismatch=1
echo "kills=$kills corrupt=$corrupt lost_steps=$lost weight_mismatch=$mismatch log_mismatch=$log_mismatch (steps $steps, checkpoint every 5; the last kill left step $last of $steps)"
