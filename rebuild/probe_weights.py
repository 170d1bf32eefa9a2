"""MAVIS at other weights on the value report's rows: each objective's paired gain over the base, and refusal rates
per prompt kind, against the base replies the report step kept (build/value-report-replies.csv, same prompts and
seeds). For questions the report does not ask, e.g. whether weights scaled by each reward's spread keep equal
weights from lowering harmless.

    PYTHONPATH=. python rebuild/probe_weights.py build/rebuild/assets/stack.toml \
        build/rebuild/build/value-report-replies.csv "helpful=0.254,harmless=0.428,humor=0.318" [seeds] [beta]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mavis_core.config import DecodeConfig
from mavis_core.decoding import generate_batch
from mavis_core.prompts import heldout_prompt_set
from mavis_core.refusals import is_refusal
from mavis_core.stack import load_stack
from mavis_core.training.value_report import mean_se


def main(stack_path: str, replies_csv: str, weights: str, seeds: int = 2, beta: float = 6.0) -> None:
    stack = load_stack(stack_path)
    lam = {k: float(v) for k, v in (item.split("=") for item in weights.split(","))}
    tagged = heldout_prompt_set(Path(stack_path), stack.spec.prompts)
    rows = [(i, p, s) for i, p in enumerate(tagged) for s in range(seeds)]
    cfg = DecodeConfig(method="mavis", weights=lam, beta=beta, max_new_tokens=32)
    gens = generate_batch(stack, [p.text for _, p, _ in rows], cfg, [s for *_, s in rows])
    texts = [g.text for g in gens]
    scores = stack.score([p.text for _, p, _ in rows], texts)
    new = pd.DataFrame({"setting": f"MAVIS {weights} β={beta:g}", "prompt": [i for i, *_ in rows],
                        "kind": [p.kind for _, p, _ in rows], "seed": [s for *_, s in rows],
                        "refusal": [is_refusal(t) for t in texts],
                        **{o: scores[o].float().cpu().numpy() for o in stack.objectives}})
    old = pd.read_csv(replies_csv)
    old = old[old.seed < seeds]
    frame = pd.concat([old[old.setting.isin(["base", f"MAVIS equal β={beta:g}"])], new], ignore_index=True)
    per_prompt = frame.groupby(["setting", "prompt"])[list(stack.objectives)].mean()
    base = per_prompt.loc["base"]
    print(f"KL of the new setting: {np.mean([g.kl for g in gens]):.1f}")
    for setting in frame.setting.unique()[1:]:
        diff = per_prompt.loc[setting] - base
        cells = {o: mean_se(diff[o].to_numpy()) for o in stack.objectives}
        print(f"{setting}: " + ", ".join(f"{o} {m:+.2f} ± {se:.2f}" for o, (m, se) in cells.items()))
    print(frame.groupby(["setting", "kind"])[["refusal", *stack.objectives]].mean().round(2).to_string())
    for text, (_, p, _) in list(zip(texts, rows, strict=True))[:: max(1, len(rows) // 12)]:
        print(f"[{p.kind}] {p.text[:60]!r} -> {text[:100]!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:5]), *(float(a) for a in sys.argv[5:6]))
