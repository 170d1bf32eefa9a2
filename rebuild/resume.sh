#!/usr/bin/env bash
# In a fresh checkout: make the worktree build/rebuild and put back what rebuild/ carries, so that
# rebuild/run.sh goes on from the last finished step. The worktree is at the commit whose code the finished steps
# ran (7eaa6cd; its code is 9c37733's), so that one rebuild is one version of the code; pass another to change that.
set -eu
cd "$(dirname "$0")/.."
commit=${1:-7eaa6cd}
git worktree prune
[ -d build/rebuild ] || git worktree add --detach build/rebuild "$commit"
rm -rf build/rebuild/assets/*.toml build/rebuild/assets/*.json build/rebuild/assets/*.md
for d in rebuild/assets/*/; do rm -rf "build/rebuild/assets/$(basename "$d")"; done
cp -r rebuild/assets/. build/rebuild/assets/
if [ -d rebuild/base-samples ]; then mkdir -p build/rebuild/build && cp -r rebuild/base-samples build/rebuild/build/; fi
if [ -d rebuild/docs ]; then rm -rf build/rebuild/docs/results && cp -r rebuild/docs/. build/rebuild/docs/; fi
cp rebuild/log/rebuild.log build/rebuild/rebuild.log
grep '^== done' build/rebuild/rebuild.log
