"""The length experiment in miniature, with one command: which position scheme carries masked-LM
quality past the training length?

    python -m mosaic_encoder.pretraining.experiment [--output DIR]

builds an offline English corpus from the interpreter's own documentation (:mod:`.stdlib_corpus`,
held-out part separate), fits a WordPiece vocabulary to its training part (:mod:`.wordpiece`),
initialises one model of a small geometry per position scheme of the registry (``alibi``,
``absolute``, ``rope``, ``none``; :mod:`mosaic_encoder.positions`), all with one feed-forward (the
GLU by default), pretrains each at ``--length`` tokens on the same token budget (same steps,
batch and data order), scores each on the held-out part at ``--eval-lengths``, and writes
``pretraining.json`` and ``pretraining.png`` (held-out loss by length per variant, with the
held-out text's unigram entropy as a reference line: what a model knowing only token
frequencies would score; training loss against the wall time of the training steps) into
``--output``, or into a new directory ``pretraining-experiment-<time>`` when none is named.
Progress goes to stderr. The absolute-position variant gets ``max_position_embeddings`` equal to
the longest evaluation length, so that it can be scored there: positions past the training length
keep their random initial embeddings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..arguments import CommandParser, compute_device, length_list
from ..atomic import atomic_path
from ..config import MosaicConfig
from ..errors import MosaicError
from ..feed_forward import FEED_FORWARDS
from ..positions import POSITION_SCHEMES
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


@dataclass(frozen=True)
class Settings:
    """The experiment's knobs (see ``--help``). ``positions``: the variants, by position scheme;
    every variant uses ``feed_forward``."""

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
    positions: tuple[str, ...] = tuple(POSITION_SCHEMES)
    feed_forward: str = "glu"
    device: str = "cpu"


def variant_config(settings: Settings, position: str) -> MosaicConfig:
    """The geometry of ``settings`` with ``position`` as its position scheme."""
    return MosaicConfig(vocab_size=settings.vocab, hidden_size=settings.hidden,
                        num_hidden_layers=settings.layers, num_attention_heads=settings.heads,
                        intermediate_size=settings.intermediate,
                        max_position_embeddings=max(settings.eval_lengths),
                        position_embedding_type=position, feed_forward=settings.feed_forward,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)


def unigram_entropy(tokenizer: TextTokenizer, held: Path) -> float:
    """Entropy in nats of the held-out text's token frequencies ([CLS]/[SEP] left out): the
    masked-LM loss of a model that knows nothing but how often each token occurs."""
    with open(held, encoding="utf-8") as stream:
        documents = [line.rstrip("\n") for line in stream if line.strip()]
    special = {tokenizer.token_to_id(name) for name in ("[CLS]", "[SEP]")}
    counts: Counter[int] = Counter()
    for start in range(0, len(documents), 256):
        ids, _, _ = tokenizer.encode_ids(documents[start:start + 256])
        counts.update(token for row in ids for token in row if token not in special)
    total = sum(counts.values())
    return -sum(n / total * math.log(n / total) for n in counts.values())


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average": list(os.getloadavg())}


def run_variant(settings: Settings, name: str, train: Path, held: Path, tokenizer_dir: Path
                ) -> dict[str, Any]:
    """Initialise, pretrain and score the variant whose position scheme is ``name``; its record
    for the JSON file."""
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
        learning_rate=settings.learning_rate, device=settings.device,
        save_every=0, progress=True), on_step=on_step)
    seconds = time.perf_counter() - started
    trained = load_masked_lm(result.output, torch.device(settings.device), "auto")
    tokenizer = TextTokenizer(tokenizer_dir / "tokenizer.json")
    with torch.inference_mode():
        scores = evaluate_lengths(trained, tokenizer, [DocumentFile.open(held)],
                                  list(settings.eval_lengths), settings.eval_tokens,
                                  settings.seed)
    return {"name": name, "config": trained.config.architecture_values(),
            "parameters": sum(p.numel() for p in trained.parameters()),
            "train_seconds": seconds, "step_seconds": curve[-1][1],
            "train_tokens": settings.steps * settings.batch_size * settings.length,
            "curve": curve, "eval": [s.as_dict() for s in scores]}


def run(settings: Settings) -> dict[str, Any]:
    """The whole experiment; returns (and writes) the results. Progress goes to stderr."""
    check_new_directory(settings.work)
    settings.work.mkdir(parents=True, exist_ok=True)
    settings.output.mkdir(parents=True, exist_ok=True)
    print(f"results go to {settings.output}; work files to {settings.work}", file=sys.stderr)
    train, held = settings.work / "train.txt", settings.work / "held-out.txt"
    counts = write_corpus(train, held)
    tokenizer_dir = train_wordpiece([train], settings.vocab, settings.work / "tokenizer")
    entropy = unigram_entropy(TextTokenizer(tokenizer_dir / "tokenizer.json"), held)
    results: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v)
                     for k, v in asdict(settings).items() if k not in ("output", "work")},
        "machine_start": machine(), "corpus": asdict(counts),
        "held_out_unigram_entropy": entropy, "variants": []}
    for number, name in enumerate(settings.positions, start=1):
        print(f"[{number}/{len(settings.positions)}] {name} positions + {settings.feed_forward}: "
              f"{settings.steps} steps at {settings.length} tokens, then scored at "
              f"{', '.join(map(str, settings.eval_lengths))}", file=sys.stderr)
        results["variants"].append(run_variant(settings, name, train, held, tokenizer_dir))
        write_results(results, settings.output)  # a later failure keeps the finished variants
    results["machine_end"] = machine()
    write_results(results, settings.output)
    plot(results, settings.output / "pretraining.png")
    print(f"wrote {settings.output / 'pretraining.json'} and "
          f"{settings.output / 'pretraining.png'}", file=sys.stderr)
    return results


def write_results(results: dict[str, Any], output: Path) -> None:
    data = (json.dumps(results, indent=2) + "\n").encode("utf-8")
    with atomic_path(output / "pretraining.json") as temporary:
        temporary.write_bytes(data)


def plot(results: dict[str, Any], path: Path) -> None:
    """Held-out loss by evaluation length per variant, with the unigram-entropy reference line,
    and training loss against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = results["settings"]
    figure, (by_length, by_time) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    for variant in results["variants"]:
        rows = [r for r in variant["eval"] if r["loss"] is not None]
        by_length.plot([r["length"] for r in rows], [r["loss"] for r in rows], marker="o",
                       label=variant["name"])
        curve = variant["curve"]
        by_time.plot([c[1] for c in curve], [c[2] for c in curve], label=variant["name"])
    trained = settings["length"]
    by_length.axvline(trained, color="grey", linestyle=":", label=f"trained at {trained}")
    entropy = results.get("held_out_unigram_entropy")
    if entropy is not None:
        by_length.axhline(entropy, color="black", linestyle="--", linewidth=1,
                          label=f"unigram entropy {entropy:.2f}")
    by_length.set(xscale="log", xlabel="evaluation length (tokens)",
                  ylabel="held-out masked-LM loss (nats)",
                  title=f"Loss by length ({settings.get('feed_forward', 'glu')} feed-forward)")
    by_length.set_xticks(settings["eval_lengths"], [str(n) for n in settings["eval_lengths"]])
    by_length.minorticks_off()
    by_time.set(xlabel="wall time of the training steps (s)", ylabel="training loss (nats)",
                title="Training loss against wall time")
    for axes in (by_length, by_time):
        axes.grid(alpha=0.3)
    # One legend for both charts, below them: inside, it would hide the long-length points.
    figure.legend(*by_length.get_legend_handles_labels(), loc="outside lower center",
                  ncol=len(results["variants"]) + 2, fontsize="small")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


def _names(text: str, registry: dict, flag: str) -> tuple[str, ...]:
    names = tuple(name for name in text.split(",") if name)
    unknown = [name for name in names if name not in registry]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{flag} takes comma-separated names among "
                                         f"{', '.join(registry)}, got {text[:60]!r}")
    return names


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
                           description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--output", type=Path, default=None,
                        help="where pretraining.json and pretraining.png go (default: a new "
                             "directory pretraining-experiment-<time> here)")
    parser.add_argument("--work", type=Path, default=None,
                        help="a new or empty directory for the corpus, tokenizer and checkpoints "
                             "(default: a new temporary directory, kept)")
    for name, text in _FIELD_HELP.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            default=getattr(defaults, name), help=text)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate,
                        help="peak learning rate (the recipe's 5e-4 is for BERT-base; a model "
                             "this small and short a run take more)")
    parser.add_argument("--eval-lengths", type=lambda text: tuple(length_list(text)), metavar="N,N,...",
                        default=defaults.eval_lengths, help="comma-separated evaluation lengths")
    parser.add_argument("--positions", type=lambda t: _names(t, POSITION_SCHEMES, "--positions"),
                        default=defaults.positions, metavar="NAMES",
                        help=f"the variants, by position scheme ({', '.join(POSITION_SCHEMES)})")
    parser.add_argument("--feed-forward", choices=tuple(FEED_FORWARDS),
                        default=defaults.feed_forward, help="every variant's feed-forward")
    parser.add_argument("--device", default=defaults.device, help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 on a shared machine, "
                             "where waiting threads cost more than they bring)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(Settings(output=Path("."), work=Path(".")))
    args = parser.parse_args(argv)
    try:
        device = compute_device(args.device)  # before any work: a bad device is one sentence
    except MosaicError as err:
        parser.error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    output = args.output or Path(time.strftime("pretraining-experiment-%Y%m%d-%H%M%S"))
    settings = Settings(
        output=output, work=args.work or Path(tempfile.mkdtemp(prefix="mosaic-pretraining-")),
        layers=args.layers, hidden=args.hidden,
        heads=args.heads, intermediate=args.intermediate, vocab=args.vocab, length=args.length,
        batch_size=args.batch_size, steps=args.steps, learning_rate=args.lr,
        eval_lengths=args.eval_lengths,
        eval_tokens=args.eval_tokens, seed=args.seed, positions=args.positions,
        feed_forward=args.feed_forward, device=str(device))
    try:
        run(settings)
    except MosaicError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
