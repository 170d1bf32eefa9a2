#!/usr/bin/env bash
# Copy what the rebuild's finished steps made (build/rebuild) into rebuild/ to be committed: its assets/, the
# base's sampled replies the policies' steps share, and the logs (step logs cut to their last lines).
set -eu
cd "$(dirname "$0")/.."
rm -rf rebuild/assets rebuild/base-samples rebuild/log rebuild/docs && mkdir -p rebuild/log
cp -r build/rebuild/assets rebuild/assets && rm -rf rebuild/assets/tiny
if [ -d build/rebuild/build/base-samples ]; then cp -r build/rebuild/build/base-samples rebuild/base-samples; fi
# the results page only once the rebuild's results step has begun (before, the worktree holds HEAD's page)
if grep -q '^== start results' build/rebuild/rebuild.log; then
  mkdir -p rebuild/docs && cp -r build/rebuild/docs/results.md build/rebuild/docs/results rebuild/docs/
fi
cp build/rebuild/rebuild.log rebuild/log/
for f in build/rebuild/rebuild-*.log; do tail -c 4000 "$f" | tr '\r' '\n' | tail -n 40 > "rebuild/log/$(basename "$f")"; done
du -sk rebuild
