#!/usr/bin/env bash
# Run build steps of the objectives' rebuild in the worktree build/rebuild, one after another, skipping those
# its log marks done; each step resumes from build/rebuild/build. Usage (from the repository root):
#   rebuild/run.sh data base rewards values report
# Besides the build's steps: `results` (the results page, going on with --resume from a carried partial run) and
# `section9` (its next-iteration section, once values-iter1 is done).
set -u
cd "$(dirname "$0")/.." || exit 1
. .venv/bin/activate
cd build/rebuild || exit 1
export PYTHONPATH=.
for step in "$@"; do
  if grep -qx "== done $step" rebuild.log 2>/dev/null; then continue; fi
  echo "== start $step $(date -u +%FT%TZ)" >> rebuild.log
  case "$step" in
    results) resume=(); [ -f docs/results/run.partial.json ] && resume=(--resume)
             cmd=(python -m mavis_core results --prompts 24 "${resume[@]}") ;;
    section9) cmd=(python -m mavis_core results --remeasure next-iteration --next-iteration assets/values/fused-iter1) ;;
    *) cmd=(python -m mavis_core build --steps "$step" --out assets --work build) ;;
  esac
  if "${cmd[@]}" > "rebuild-$step.log" 2>&1; then
    echo "== done $step" >> rebuild.log
    echo "   finished $(date -u +%FT%TZ)" >> rebuild.log
  else
    echo "== failed $step $(date -u +%FT%TZ)" >> rebuild.log
    exit 1
  fi
done
