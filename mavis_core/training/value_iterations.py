"""``train-values``: MAVIS value models by the iterative algorithm (arXiv 2508.13415), resumable and data-parallel.

Per iteration k (default k = 0, 1):

1. ``rollouts``: trees from π_k (π_0 = the base; π_k = MAVIS guided by V_{k-1}, λ one-hot), see
   `mavis_core.training.trees`. Iteration 0's trees come from the base alone, so they are shared by every
   objective (and by the fused model) in ``WORK/iter0-base``.
2. ``train``: a value model initialised from the base's embeddings, first ``layers`` blocks and final norm
   (from iteration 1 on: from V_{k-1}, ``warm_start``), regressed with MSE on (prompt ⊕ reply up to the
   node's end) -> the node's target, read exactly as decoding reads it: the per-position score head at the last
   token (`mavis_core.values.values_uncached`). With ``dense`` every position of the node's chunk is trained on
   the node's target, not only its last: each of those prefixes has the leaves below the node as its
   Monte-Carlo continuations, so one forward gives a target per token instead of one per node.
   Targets subtract ζ·E[log π_k/π_ref] from iteration 1 on. Best checkpoint by validation MSE.
3. ``eval``: on held-out prompts, mean reward and mean KL of single-objective MAVIS vs the base.

Every stage writes to ``WORK/...`` and is skipped when its output is there, so rerunning the same command
resumes after an interruption (rollouts resume per batch of prompts, training per epoch). Under
``accelerate launch -m mavis_core train-values …`` the processes split the prompts of each rollout stage and train
data-parallel. The fit itself (examples, loss, epochs) is `mavis_core.training.value_training`.

A *fused* value model (``--fused``) has one head per objective (``config.id2label`` names them), so one forward
pass scores all objectives. From iteration 1 on each objective needs trees from its own guided policy: head m
is trained on objective m's trees only (a per-head mask in the loss).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..stack import Stack
from ..value_models import ValueModel
from .runs import TrainRunConfig, TreeOptions
from .trees import Tree, TreeConfig, append_trees, grow_trees, read_trees, rollout_config
from .value_training import (
    BEST,
    Examples,
    ValueTrainConfig,
    concat_examples,
    evaluate_guidance,
    guided_by,
    init_value_model,
    load_training_stack,
    load_value_model,
    save_value_model,
    split_trees,
    stored_offsets,
    train_value_model,
    tree_examples,
    warm_value_model,
)


@dataclass(frozen=True)
class Run:
    """What one ``train-values`` invocation trains: ``name`` is the objective, or "fused" for all of them;
    ``objectives`` are the objectives of its heads, in head order."""

    name: str
    objectives: tuple[str, ...]


def _sha(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _check_meta(folder: Path, meta: dict, accelerator) -> None:
    """Record what a stage folder was made with; refuse to mix in results made with other settings."""
    path = folder / "meta.json"
    if accelerator.is_main_process and not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta, indent=1, sort_keys=True))
    accelerator.wait_for_everyone()
    if json.loads(path.read_text()) != json.loads(json.dumps(meta)):
        raise ValueError(f"{folder} was made with other settings ({path}); delete it or choose another --work")


def rollout_stage(stack: Stack, folder: Path, prompts: list[str], tree_cfg: TreeConfig, guide: str | None,
                  beta: float, value_model: ValueModel | None, accelerator) -> list[Tree]:
    """Trees of all ``prompts`` from the base (``guide`` None) or MAVIS one-hot on ``guide``; resumable.

    Process r grows the trees of prompts i with i % world == r into ``trees-r.jsonl``; trees already in any
    ``trees-*.jsonl`` are skipped, so a rerun (with any number of processes) picks up where one stopped.
    """
    if guide is not None:  # forced refusal openers belong to the base's trees only (their log-ratio is not known)
        tree_cfg = replace(tree_cfg, refusal_children=0)
    # The base's trees do not depend on β: runs with other β still share them.
    meta = {"tree": asdict(tree_cfg), "prompts": _sha(prompts), "guide": guide, "beta": beta if guide else None,
            "value_model": value_model.path if value_model else None, "base": stack.spec.base_model}
    _check_meta(folder, meta, accelerator)
    if not (folder / "done").exists():
        start = time.perf_counter()
        done = {t.index for t in read_trees(sorted(folder.glob("trees-*.jsonl")))}
        rank, world = accelerator.process_index, accelerator.num_processes
        mine = [(i, p) for i, p in enumerate(prompts) if i % world == rank and i not in done]
        decode_cfg = rollout_config(stack, tree_cfg, guide, beta)
        bar = tqdm(total=len(mine), desc=f"trees ({guide or 'base'})", disable=not accelerator.is_main_process)
        with guided_by(stack, value_model):
            for trees in grow_trees(stack, mine, tree_cfg, decode_cfg):
                append_trees(folder / f"trees-{rank}.jsonl", trees)
                bar.update(len(trees))
        bar.close()
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:  # the run that finished the stage records its wall time
            (folder / "done").write_text(json.dumps({"seconds": round(time.perf_counter() - start, 1)}))
    accelerator.wait_for_everyone()
    trees = read_trees(sorted(folder.glob("trees-*.jsonl")))
    if len(trees) != len(prompts):
        raise ValueError(f"{folder} holds {len(trees)} trees for {len(prompts)} prompts; delete it and rerun")
    return trees


def iteration_examples(trees_by_guide: dict[str | None, list[Tree]], run: Run, zeta: float,
                       cfg: ValueTrainConfig) -> tuple[Examples, Examples]:
    """(train, validation) examples: base trees train every head, trees guided by objective m train head m."""
    train, val = [], []
    for guide, trees in trees_by_guide.items():
        trained = list(run.objectives) if guide is None else [guide]
        tr, va = split_trees(trees, cfg.val_fraction, cfg.seed)
        train.append(tree_examples(tr, list(run.objectives), trained, zeta, cfg.dense))
        val.append(tree_examples(va, list(run.objectives), trained, zeta))  # validated on node values either way
    return concat_examples(train), concat_examples(val)


def train_stage(stack: Stack, trees_by_guide: dict, run: Run, k: int, cfg: ValueTrainConfig, folder: Path,
                accelerator) -> dict:
    """Train iteration k's value model into ``folder/best`` (skipped when ``folder/train.json`` exists)."""
    if (folder / "train.json").exists():
        return json.loads((folder / "train.json").read_text())
    start = time.perf_counter()
    train, val = iteration_examples(trees_by_guide, run, cfg.zeta if k > 0 else 0.0, cfg)
    torch.manual_seed(cfg.seed + k)
    previous = previous_model(folder.parent, k, cfg)
    warm = k > 0 and cfg.warm_start
    model = (warm_value_model(stack.base, previous, list(run.objectives)) if warm
             else init_value_model(stack.base, cfg, list(run.objectives)))
    report = train_value_model(model, train, val, cfg, folder, stack.tokenizer.pad_token_id, accelerator,
                               start_offsets=stored_offsets(previous) if warm else None)
    report.update(train_examples=len(train), val_examples=len(val), seconds=round(time.perf_counter() - start, 1))
    if accelerator.is_main_process:
        (folder / "train.json").write_text(json.dumps(report, indent=1))
    accelerator.wait_for_everyone()
    return report


def previous_model(work_run: Path, k: int, cfg: ValueTrainConfig) -> Path:
    """Where V_{k-1} is: ``start_from`` for iteration 1 when given, else the previous iteration's best."""
    if k == 1 and cfg.start_from is not None:
        return Path(cfg.start_from)
    return work_run / f"iter{k - 1}" / BEST


def eval_stage(stack: Stack, run: Run, value_model: ValueModel, prompts: list[str], cfg: ValueTrainConfig,
               tree_cfg: TreeConfig, folder: Path, accelerator) -> dict:
    """Held-out reward and KL of single-objective MAVIS vs the base, per objective (main process only)."""
    if not (folder / "eval.json").exists() and accelerator.is_main_process:
        report = {name: evaluate_guidance(stack, name, prompts, value_model, cfg.beta, cfg.eval_max_new_tokens,
                                          tree_cfg.top_k, cfg.seed) for name in run.objectives}
        (folder / "eval.json").write_text(json.dumps(report, indent=1))
    accelerator.wait_for_everyone()
    return json.loads((folder / "eval.json").read_text())


def run_iterations(stack: Stack, run: Run, prompts: list[str], eval_prompts: list[str], tree_cfg: TreeConfig,
                   cfg: ValueTrainConfig, work: Path, accelerator) -> tuple[Path, list[dict]]:
    """All iterations: rollouts from π_k, targets, training, evaluation. Returns (last best model, reports)."""
    value_model, reports = None, []
    for k in range(cfg.iterations):
        folder = work / run.name / f"iter{k}"
        if k == 0 and cfg.start_from is not None:
            value_model = load_value_model(stack, Path(cfg.start_from))
            found = [stack.objectives[h] for h in value_model.heads]
            if found != list(run.objectives):
                raise ValueError(f"--start-from {cfg.start_from} has heads {found}, not this run's "
                                 f"{list(run.objectives)}")
            reports.append({"iteration": 0, "start_from": cfg.start_from})
            if accelerator.is_main_process:
                print(f"[train-values] {run.name} iteration 0: taken from {cfg.start_from}", flush=True)
            continue
        guides = [None] if k == 0 else list(run.objectives)
        trees_by_guide = {
            g: rollout_stage(stack, work / "iter0-base" if g is None else folder / f"trees-{g}",
                             prompts if g is None else prompts[: cfg.guided_prompts], tree_cfg,
                             g, cfg.beta, value_model, accelerator)
            for g in guides
        }
        train = train_stage(stack, trees_by_guide, run, k, cfg, folder, accelerator)
        value_model = load_value_model(stack, folder / BEST)
        evaluation = eval_stage(stack, run, value_model, eval_prompts, cfg, tree_cfg, folder, accelerator)
        folders = [work / "iter0-base" if g is None else folder / f"trees-{g}" for g in guides]
        reports.append({"iteration": k, "best_val_mse": train["best_val_mse"], "eval": evaluation,
                        "minutes": stage_minutes(folders, train)})
        if accelerator.is_main_process:
            print(f"[train-values] {run.name} iteration {k}: " + format_report(reports[-1]), flush=True)
    return work / run.name / f"iter{cfg.iterations - 1}" / BEST, reports  # start_from needs iterations >= 2


def stage_minutes(tree_folders: list[Path], train: dict) -> dict[str, float | None]:
    """Wall minutes of an iteration's rollouts (summed over its tree folders) and training, as the runs that
    finished each stage recorded them; None where a stage was finished by a version that did not record it."""
    seconds = []
    for folder in tree_folders:
        text = (folder / "done").read_text() if (folder / "done").exists() else ""
        seconds.append(json.loads(text).get("seconds") if text.strip() else None)
    rollouts = None if None in seconds else round(sum(seconds) / 60, 1)
    training = train.get("seconds")
    return {"rollouts": rollouts, "training": None if training is None else round(training / 60, 1)}


def format_report(report: dict) -> str:
    parts = [f"val mse {report['best_val_mse']:.4f}"]
    for name, e in report["eval"].items():
        parts.append(f"{name}: reward base {e['base_reward']:.3f} -> mavis {e['mavis_reward']:.3f}, "
                     f"KL base {e['base_kl']:.2f} / mavis {e['mavis_kl']:.2f}")
    return "; ".join(parts)


# ---- the train-values command ------------------------------------------------------------------------------

_FIT = ValueTrainConfig()
# quick: a few tiny trees and one short epoch per iteration, a smoke test in seconds.
QUICK_TREES = TreeConfig(root_children=2, inner_children=2, levels=3, max_new_tokens=12, prompts_per_batch=2)


@dataclass(frozen=True)
class TrainValuesConfig(TreeOptions, TrainRunConfig):
    """What one ``train-values`` run trains, field for field its command-line options (`config_argv`).

    Args:
        objective / fused: the objective to train a value model for, or (``fused``) one model with a head per
            objective; exactly one of the two. The model goes to ``out`` (None: STACK_DIR/values/NAME).
        max_new_tokens: the rollouts' and the evaluation's reply length.
        The others are `TreeOptions`' (the rollout trees), `TrainRunConfig`'s (stack, prompts, folders, seed,
        quick) and `ValueTrainConfig`'s.
    """

    work: Path = Path("build/values")
    objective: str | None = None
    fused: bool = False
    iterations: int = _FIT.iterations
    beta: float = _FIT.beta
    zeta: float = _FIT.zeta
    kind: str = _FIT.kind
    layers: int = _FIT.layers
    lora_r: int = _FIT.lora_r
    epochs: int = _FIT.epochs
    batch_size: int = _FIT.batch_size
    lr: float = _FIT.lr
    dense: bool = _FIT.dense
    guided_prompts: int | None = _FIT.guided_prompts
    warm_start: bool = field(default=_FIT.warm_start, metadata={"option": "--cold-start"})
    start_from: Path | None = None

    def __post_init__(self) -> None:
        if self.fused == bool(self.objective):
            raise ValueError(f"give exactly one of objective (--objective NAME) or fused (--fused); got "
                             f"objective={self.objective!r}, fused={self.fused}")
        super().__post_init__()

    def trees(self) -> TreeConfig:
        """The rollout trees' settings (tiny ones when ``quick``)."""
        return replace(QUICK_TREES, seed=self.seed) if self.quick else super().trees()

    def fit(self) -> ValueTrainConfig:
        """The value-model iterations' settings."""
        cfg = ValueTrainConfig(iterations=self.iterations, kind=self.kind, lora_r=self.lora_r, layers=self.layers,
                               guided_prompts=self.guided_prompts, warm_start=self.warm_start,
                               start_from=str(self.start_from) if self.start_from else None, epochs=self.epochs,
                               batch_size=self.batch_size, lr=self.lr, dense=self.dense, zeta=self.zeta,
                               beta=self.beta, eval_max_new_tokens=self.max_new_tokens, seed=self.seed)
        if self.quick:
            cfg = replace(cfg, epochs=2, batch_size=8, eval_max_new_tokens=QUICK_TREES.max_new_tokens)
        return cfg


def pick_run(stack: Stack, cfg: TrainValuesConfig) -> Run:
    if cfg.fused:
        return Run("fused", tuple(stack.objectives))
    if cfg.objective not in stack.objectives:
        raise ValueError(f"objective {cfg.objective!r} is not in this stack; it has {stack.objectives}")
    return Run(cfg.objective, (cfg.objective,))


def train_values(cfg: TrainValuesConfig) -> list[dict]:
    """Run (or resume) the iterations, then save the last value model to ``cfg.out``.

    Runs as one process, or data-parallel under ``accelerate launch``. Returns the per-iteration reports.
    """
    from accelerate import Accelerator

    # cpu=True without CUDA: accelerate then joins processes started by `accelerate launch --multi_gpu` (or
    # torchrun) over gloo; with its default it would run each of them as a lone single process.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    stack = load_training_stack(cfg.stack, accelerator.device)
    run = pick_run(stack, cfg)
    prompts, eval_prompts = cfg.prompt_sets(stack)
    best, reports = run_iterations(stack, run, prompts, eval_prompts, cfg.trees(), cfg.fit(), cfg.work, accelerator)
    out = cfg.out or cfg.stack.parent / "values" / run.name
    if accelerator.is_main_process:
        save_value_model(best, out, cfg.out_dtype)
        (cfg.work / run.name / "report.json").write_text(json.dumps(reports, indent=1))
        print(f"[train-values] {run.name}: value model -> {out}", flush=True)
    accelerator.wait_for_everyone()
    return reports
