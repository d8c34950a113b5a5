"""The ALiBi experiment in miniature, with one command.

    python -m mosaic_encoder.pretraining.experiment --output benchmarks/pretraining

builds an offline English corpus from the interpreter's own documentation (:mod:`.stdlib_corpus`,
held-out part separate), fits a WordPiece vocabulary to its training part (:mod:`.wordpiece`),
initialises four variants of one small geometry (ALiBi + GLU as in MosaicBERT, absolute + GELU
as in BERT, and the two mixed), pretrains each at ``--length`` tokens on the same token budget
(same steps, batch and data order), scores each on the held-out part at ``--eval-lengths``, and
writes ``pretraining.json`` and ``pretraining.png`` (held-out loss by length per variant; training
loss against the wall time of the training steps, set-up, evaluation and saving left out) into
``--output``. The absolute-position variants get
``max_position_embeddings`` equal to the longest evaluation length, so that they can be scored
there: positions past the training length keep their random initial embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..arguments import CommandParser
from ..atomic import atomic_path
from ..config import MosaicConfig
from ..tokenizer import TextTokenizer
from .config import PretrainConfig
from .documents import DocumentFile
from .evaluation import evaluate_lengths
from .initialise import new_masked_lm
from .model_files import check_new_directory, write_directory
from .run import pretrain
from .stdlib_corpus import write_corpus
from .task import load_masked_lm
from .wordpiece import train_wordpiece

VARIANTS = {  # name: (position_embedding_type, feed_forward)
    "alibi+glu": ("alibi", "glu"),
    "absolute+gelu": ("absolute", "gelu"),
    "alibi+gelu": ("alibi", "gelu"),
    "absolute+glu": ("absolute", "glu"),
}


@dataclass(frozen=True)
class Settings:
    """The experiment's knobs (see ``--help``)."""

    output: Path
    work: Path
    layers: int = 4
    hidden: int = 128
    heads: int = 4
    intermediate: int = 512
    vocab: int = 8192
    length: int = 128
    batch_size: int = 16
    steps: int = 400
    learning_rate: float = 1e-3
    eval_lengths: tuple[int, ...] = (128, 256, 512, 1024)
    eval_tokens: int = 16384
    seed: int = 0
    variants: tuple[str, ...] = tuple(VARIANTS)


def variant_config(settings: Settings, name: str) -> MosaicConfig:
    positions, feed_forward = VARIANTS[name]
    return MosaicConfig(vocab_size=settings.vocab, hidden_size=settings.hidden,
                        num_hidden_layers=settings.layers, num_attention_heads=settings.heads,
                        intermediate_size=settings.intermediate,
                        max_position_embeddings=max(settings.eval_lengths),
                        position_embedding_type=positions, feed_forward=feed_forward,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average": list(os.getloadavg())}


def run_variant(settings: Settings, name: str, train: Path, held: Path, tokenizer_dir: Path
                ) -> dict[str, Any]:
    """Initialise, pretrain and score one variant; its record for the JSON file."""
    work = settings.work / name
    model = new_masked_lm(variant_config(settings, name), seed=settings.seed)
    write_directory(work / "init", model, tokenizer_dir)
    curve: list[list[float]] = []  # [step, seconds of training steps so far, loss]
    step_tokens = settings.batch_size * settings.length
    started = time.perf_counter()

    def on_step(step: int, record: dict[str, Any]) -> None:
        spent = (curve[-1][1] if curve else 0.0) + step_tokens / record["tokens_per_s"]
        curve.append([step, spent, record["loss"]])

    result = pretrain(PretrainConfig(
        model=work / "init", data=(train,), output=work / "run", steps=settings.steps,
        batch_size=settings.batch_size, max_seq_length=settings.length, seed=settings.seed,
        learning_rate=settings.learning_rate,
        save_every=0, progress=False), on_step=on_step)
    seconds = time.perf_counter() - started
    trained = load_masked_lm(result.output, torch.device("cpu"), "auto")
    tokenizer = TextTokenizer(tokenizer_dir / "tokenizer.json")
    scores = evaluate_lengths(trained, tokenizer, [DocumentFile.open(held)],
                              list(settings.eval_lengths), settings.eval_tokens, settings.seed)
    return {"name": name, "config": trained.config.architecture_values(),
            "parameters": sum(p.numel() for p in trained.parameters()),
            "train_seconds": seconds, "step_seconds": curve[-1][1],
            "train_tokens": settings.steps * settings.batch_size * settings.length,
            "curve": curve, "eval": [s.as_dict() for s in scores]}


def run(settings: Settings) -> dict[str, Any]:
    """The whole experiment; returns (and writes) the results."""
    check_new_directory(settings.work)
    settings.work.mkdir(parents=True, exist_ok=True)
    settings.output.mkdir(parents=True, exist_ok=True)
    train, held = settings.work / "train.txt", settings.work / "held-out.txt"
    counts = write_corpus(train, held)
    tokenizer_dir = train_wordpiece([train], settings.vocab, settings.work / "tokenizer")
    results: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v)
                     for k, v in asdict(settings).items() if k not in ("output", "work")},
        "machine_start": machine(), "corpus": asdict(counts), "variants": []}
    for name in settings.variants:
        results["variants"].append(run_variant(settings, name, train, held, tokenizer_dir))
        write_results(results, settings.output)  # a later failure keeps the finished variants
    results["machine_end"] = machine()
    write_results(results, settings.output)
    plot(results, settings.output / "pretraining.png")
    return results


def write_results(results: dict[str, Any], output: Path) -> None:
    data = (json.dumps(results, indent=2) + "\n").encode("utf-8")
    with atomic_path(output / "pretraining.json") as temporary:
        temporary.write_bytes(data)


def plot(results: dict[str, Any], path: Path) -> None:
    """Held-out loss by evaluation length, and training loss against wall time, per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_length, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for variant in results["variants"]:
        rows = [r for r in variant["eval"] if r["loss"] is not None]
        by_length.plot([r["length"] for r in rows], [r["loss"] for r in rows], marker="o",
                       label=variant["name"])
        curve = variant["curve"]
        by_time.plot([c[1] for c in curve], [c[2] for c in curve], label=variant["name"])
    trained = results["settings"]["length"]
    by_length.axvline(trained, color="grey", linestyle=":", label=f"trained at {trained}")
    by_length.set(xscale="log", xlabel="evaluation length (tokens)",
                  ylabel="held-out masked-LM loss (nats)", title="Loss by length")
    by_length.set_xticks(results["settings"]["eval_lengths"],
                         [str(n) for n in results["settings"]["eval_lengths"]])
    by_length.minorticks_off()
    by_time.set(xlabel="wall time (s)", ylabel="training loss (nats)",
                title="Training loss against wall time")
    for axes in (by_length, by_time):
        axes.legend()
        axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


# Help texts of the geometry and schedule flags, one per Settings field.
_FIELD_HELP = {"layers": "encoder layers", "hidden": "hidden size", "heads": "attention heads",
               "intermediate": "feed-forward width", "vocab": "WordPiece vocabulary size",
               "length": "training sequence length (tokens)",
               "batch_size": "sequences per optimizer step", "steps": "optimizer steps per variant",
               "eval_tokens": "held-out tokens scored per evaluation length",
               "seed": "fixes the corpus split, initial weights, data order and masks"}


def build_parser(defaults: Settings) -> argparse.ArgumentParser:
    """The command line of ``python -m mosaic_encoder.pretraining.experiment``."""
    parser = CommandParser(prog="python -m mosaic_encoder.pretraining.experiment",
                           description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=defaults.output,
                        help="where pretraining.json and pretraining.png go")
    parser.add_argument("--work", type=Path, default=None,
                        help="a new or empty directory for the corpus, tokenizer and checkpoints "
                             "(default: a new temporary directory, kept)")
    for name, text in _FIELD_HELP.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            default=getattr(defaults, name), help=text)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate,
                        help="peak learning rate (default 1e-3: the recipe's 5e-4 is for "
                             "BERT-base; a model this small and short a run take more)")
    parser.add_argument("--eval-lengths", default=",".join(map(str, defaults.eval_lengths)),
                        help="comma-separated held-out sequence lengths")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 on a shared machine, "
                             "where waiting threads cost more than they bring)")
    parser.add_argument("--variants", default=",".join(defaults.variants),
                        help=f"comma-separated variants among {', '.join(VARIANTS)}")
    return parser


def main(argv: list[str] | None = None) -> int:
    defaults = Settings(output=Path("benchmarks/pretraining"), work=Path("."))
    parser = build_parser(defaults)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(
        output=args.output, work=args.work or Path(tempfile.mkdtemp(prefix="mosaic-pretraining-")),
        layers=args.layers, hidden=args.hidden,
        heads=args.heads, intermediate=args.intermediate, vocab=args.vocab, length=args.length,
        batch_size=args.batch_size, steps=args.steps, learning_rate=args.lr,
        eval_lengths=tuple(int(n) for n in args.eval_lengths.split(",")),
        eval_tokens=args.eval_tokens, seed=args.seed,
        variants=tuple(args.variants.split(",")))
    run(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
