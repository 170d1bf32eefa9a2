#!/usr/bin/env bash
# Once every step is done (rebuild.log marks results and section9 done): move the rebuild's artifacts into the
# shipped stack (assets/, keeping tiny/, which is not rebuilt) and its results page into docs/, from the worktree
# build/rebuild if it is there, else from what rebuild/ staged. What is left by hand: the texts that quote the
# stack's figures (README, docs/training.md, docs/rewards.md), the tests that mark the old heads' blind spots, and
# `git rm -r rebuild`.
set -eu
cd "$(dirname "$0")/.."
src=rebuild
[ -d build/rebuild/assets ] && src=build/rebuild
log=$src/rebuild.log; [ "$src" = rebuild ] && log=rebuild/log/rebuild.log
for step in data base rewards values policies references report values-iter1 conditioned results section9; do
  grep -qx "== done $step" "$log" || { echo "step $step is not done ($log): not shipping" >&2; exit 1; }
done
find assets -mindepth 1 -maxdepth 1 ! -name tiny -exec rm -rf {} +
for p in "$src"/assets/*; do [ "$(basename "$p")" = tiny ] || cp -r "$p" assets/; done
rm -rf docs/results docs/results.md
cp -r "$src/docs/results" "$src/docs/results.md" docs/
git status --short assets docs | head -40
du -sk assets
