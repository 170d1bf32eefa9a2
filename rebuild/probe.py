"""What a visitor sees on the app's mild example requests: MAVIS's replies at the stack's β for one-hot helpful,
one-hot harmless and equal weights over seeds 0 to N-1 (default 6), and how many refuse by the project's rule.

    PYTHONPATH=. python rebuild/probe.py build/rebuild/assets/stack.toml [seeds]
"""

import sys

from mavis_core.config import DecodeConfig
from mavis_core.engine import Engine, example_prompts
from mavis_core.refusals import is_refusal
from mavis_core.stack import load_stack

WEIGHTS = {"helpful": {"helpful": 1.0}, "harmless": {"harmless": 1.0},
           "equal": {"helpful": 1.0, "harmless": 1.0, "humor": 1.0}}


def main(path: str, seeds: int = 6) -> None:
    engine = Engine(load_stack(path))
    for prompt in example_prompts(engine.stack)[:4]:
        print(f"\n## {prompt}")
        for name, weights in WEIGHTS.items():
            texts = []
            for seed in range(seeds):
                settings = engine.settings(weights, engine.default_beta, DecodeConfig.default("top_k"), 1.0, 48, seed)
                texts.append(engine.reply(prompt, "mavis", settings).text)
            print(f"{name}: {sum(map(is_refusal, texts))} of {seeds} refuse")
            for text in texts:
                print("   ", ("R " if is_refusal(text) else "  ") + text.replace("\n", " ")[:110])


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
