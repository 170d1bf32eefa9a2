#!/usr/bin/env bash
# In a fresh checkout: make the worktree build/rebuild at HEAD and put back what rebuild/ carries, so that
# rebuild/run.sh goes on from the last finished step.
set -eu
cd "$(dirname "$0")/.."
[ -d build/rebuild ] || git worktree add --detach build/rebuild HEAD
rm -rf build/rebuild/assets/*.toml build/rebuild/assets/*.json build/rebuild/assets/*.md
for d in rebuild/assets/*/; do rm -rf "build/rebuild/assets/$(basename "$d")"; done
cp -r rebuild/assets/. build/rebuild/assets/
if [ -d rebuild/base-samples ]; then mkdir -p build/rebuild/build && cp -r rebuild/base-samples build/rebuild/build/; fi
if [ -d rebuild/docs ]; then rm -rf build/rebuild/docs/results && cp -r rebuild/docs/. build/rebuild/docs/; fi
cp rebuild/log/rebuild.log build/rebuild/rebuild.log
grep '^== done' build/rebuild/rebuild.log
