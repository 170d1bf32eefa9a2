"""Reward models: ``score(prompts, responses) -> Tensor[n]`` (higher is better), batched.

Kinds (``kind`` in a stack's reward table):
- ``sequence-classification``: a Hugging Face sequence-classification model (the paper stack's
  Ray2333 reward models, or ``mohameddhiab/humor-no-humor`` with ``label = 1``); the text fed to it is
  ``template.format(prompt=…, response=…)`` and the score is the logit of class ``label``.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .config import RewardSpec

SCORE_BATCH = 64


class SequenceClassificationReward:
    """A transformers sequence-classification reward model; the score is one class's logit."""

    def __init__(self, spec: RewardSpec, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.spec = spec
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=False)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            spec.path, trust_remote_code=False, dtype=dtype
        ).to(device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        if not 0 <= spec.label < self.model.config.num_labels:
            raise ValueError(
                f"reward label {spec.label} is out of range for {spec.path} "
                f"with {self.model.config.num_labels} classes"
            )

    @torch.inference_mode()
    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Score n (prompt, response) pairs. Returns a float32 tensor of shape (n,) on the CPU."""
        texts = [self.spec.template.format(prompt=p, response=r) for p, r in zip(prompts, responses, strict=True)]
        out = []
        for i in range(0, len(texts), SCORE_BATCH):
            batch = self.tokenizer(
                texts[i : i + SCORE_BATCH], return_tensors="pt", padding=True,
                truncation=True, max_length=self.spec.max_length,
            ).to(self.device)
            logits = self.model(**batch).logits  # (b, num_labels)
            out.append(logits[:, self.spec.label].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)


def load_reward(spec: RewardSpec, device: torch.device, dtype: torch.dtype = torch.float32):
    """Load the reward model a stack names; every kind has ``score(prompts, responses)``."""
    if spec.kind == "sequence-classification":
        return SequenceClassificationReward(spec, device, dtype)
    raise ValueError(f"reward kind {spec.kind!r} is not implemented yet")
