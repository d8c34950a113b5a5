"""The command line of the benchmarks: one parser for every subcommand.

``python -m mosaic_encoder.bench SUBCOMMAND ...`` and ``mosaic-encoder bench SUBCOMMAND ...``:

* ``attention``: the attention sweep (:mod:`.attention`);
* ``model``: the whole-model benchmark against the dense baseline (:mod:`.model`);
* ``mlm``: a masked-LM training step against ``transformers``' BertForMaskedLM (:mod:`.mlm`);
* ``report FILE.json ...``: Markdown tables of result files (:mod:`.report`);
* ``plots FILE.json ... --out DIR``: PNG charts of result files (:mod:`.plots`);
* ``compiled``: regional and whole-model torch.compile and onnxruntime against eager
  (:mod:`.compiled`);
* ``compile --target sm_90``: the kernels compiled offline, per config (:mod:`.compile`).

Options the benchmarks share are declared once, in :func:`_common_options`. Every parser here
builds without importing torch (the benchmark modules are imported when one runs), so ``--help``
and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..arguments import CommandParser, add_attention, add_dtype, positive_int
from ..bundled import BUNDLED_CHECKPOINT
from ..dtype_names import canonical_dtype, short_dtype, spellings
from ..errors import InputError, MosaicError
from .flops import MODES
from .names import COMMAND, COMPOSITIONS, IMPLEMENTATIONS, SUBCOMMANDS, WINDOW_SETTINGS

GPU_RESULTS = Path("benchmarks") / "gpu"
DESCRIPTION = ("Benchmarks of the attention implementations and of the whole encoder (time, "
               "TFLOP/s, peak memory, error against float64); the docstring of "
               "mosaic_encoder/bench/results.py defines every column.")


def int_list(text: str) -> list[int]:
    """``"128,512"`` -> [128, 512]; positive integers only."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A parser of comma-separated values, each one of ``choices``."""
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} "
                                             f"(comma-separated), got {text!r}")
        return values
    return parse


def dtype_list(short: bool = False) -> Callable[[str], list[str]]:
    """A parser of comma-separated dtype names in any spelling (:mod:`..dtype_names`), giving
    the canonical names or, with ``short``, fp32/bf16/fp16 (the compile report's)."""
    def parse(text: str) -> list[str]:
        values = [canonical_dtype(part) for part in text.split(",") if part.strip()]
        if not values or None in values:
            raise argparse.ArgumentTypeError(f"choose from {spellings()} (comma-separated), got "
                                             f"{text!r}")
        return [short_dtype(v) for v in values] if short else values
    return parse


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when available)")
    common.add_argument("--min-samples", type=positive_int, default=None, metavar="N",
                        help="timed calls per row at least (default 3; --quick: 1)")
    common.add_argument("--max-dense-gib", type=float, default=None, metavar="GIB",
                        help="report dense implementations that would materialise more than "
                             "this as unsupported (default: CPU min(8, RAM/3), GPU 80%% of its "
                             "memory)")
    common.add_argument("--alibi-starting-size", type=positive_int, default=4096, metavar="N",
                        help="N of the dense baseline's (heads, N, N) ALiBi table (default "
                             "4096, lodestone's)")
    common.add_argument("--window", choices=tuple(WINDOW_SETTINGS), default="on",
                        help="exact ALiBi windowing of our implementations (attention: "
                             "ours-triton and ours-sdpa; model: the config's attention_window): "
                             "on, off, or both (a row for each; default on); attention only: "
                             "always (the kernel windows at every length, not only where it "
                             "pays) and all (on, always and off)")
    common.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="torch CPU threads (default: torch's choice)")
    common.add_argument("--seed", type=int, default=0, help="fixes the random inputs")
    common.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                        help="write results to this .json and the .csv beside it (default: "
                             "none on CPU; on a GPU benchmarks/gpu/<subcommand>-<gpu>.json)")
    return common


def _attention_options(parser: argparse.ArgumentParser) -> None:
    impls = IMPLEMENTATIONS["attention"]
    parser.add_argument("--impls", type=choice_list(impls), default=list(impls),
                        help=f"comma-separated subset of {','.join(impls)} (default: all)")
    parser.add_argument("--lengths", type=int_list, default=None,
                        help="longest-sequence lengths to sweep (default: CPU 128..2048, "
                             "GPU 128..16384, powers of two)")
    parser.add_argument("--compositions", type=choice_list(COMPOSITIONS), default=None,
                        help="single, equal, mixed (default: all; --quick: single, mixed)")
    parser.add_argument("--batch-tokens", type=positive_int, default=None, metavar="N",
                        help="tokens per batch for 'equal' and 'mixed' (at least 2 x length; "
                             "default: CPU 4096, GPU 16384; --quick: CPU 1024, GPU 4096)")
    parser.add_argument("--heads", type=int_list, default=[12], help="head counts (default 12)")
    parser.add_argument("--head-dims", type=int_list, default=[64],
                        help="head dimensions (default 64)")
    parser.add_argument("--dtypes", type=dtype_list(), default=None,
                        help=f"comma-separated {spellings()} (default: CPU float32, GPU "
                             f"bfloat16)")
    parser.add_argument("--modes", type=choice_list(MODES), default=list(MODES),
                        help="fwd, fwd+bwd (default: both)")
    parser.add_argument("--min-run-time", type=float, default=None, metavar="SECONDS",
                        help="CPU: seconds of timed calls per row at least (default 1.0; "
                             "0 with --quick)")
    parser.add_argument("--oracle-max-seqlen", type=positive_int, default=None, metavar="N",
                        help="skip the float64 reference above this sequence length (default: "
                             "CPU 4096, GPU 16384)")
    parser.add_argument("--flex-eager", action="store_true",
                        help="run FlexAttention without torch.compile (unfused, dense scores; "
                             "always so for a --quick CPU run)")
    parser.add_argument("--triton-interpret", action="store_true",
                        help="CPU: run ours-triton in Triton's interpreter (needs "
                             "TRITON_INTERPRET=1; tiny sizes only)")
    parser.add_argument("--interpret-max-tokens", type=positive_int, default=1024, metavar="N",
                        help="largest batch run in the Triton interpreter (default 1024)")
    parser.add_argument("--quick", action="store_true",
                        help="a short sweep: length CPU 256 / GPU 512,2048, single and mixed "
                             "batches (CPU 512 tokens, GPU 4096), one timed call per row")


def _geometry_options(parser: argparse.ArgumentParser, hidden: int, layers: int, heads: int,
                      intermediate: int) -> None:
    """The encoder geometry of the model and mlm benchmarks' random-weight models."""
    parser.add_argument("--hidden", type=positive_int, default=hidden, metavar="N",
                        help="hidden size")
    parser.add_argument("--layers", type=positive_int, default=layers, metavar="N",
                        help="encoder layers")
    parser.add_argument("--heads", type=positive_int, default=heads, metavar="N",
                        help="attention heads (must divide --hidden)")
    parser.add_argument("--intermediate", type=positive_int, default=intermediate, metavar="N",
                        help="feed-forward width")
    parser.add_argument("--vocab", type=positive_int, default=30528, metavar="N",
                        help="vocabulary rows")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="DIR",
                        help="a checkpoint directory (default: random weights, --hidden etc.)")
    _geometry_options(parser, hidden=768, layers=12, heads=12, intermediate=3072)
    add_dtype(parser, default=None, help="the compute dtype (default: CPU float32, GPU bfloat16)")
    add_attention(parser)
    impls = IMPLEMENTATIONS["model"]
    parser.add_argument("--impls", type=choice_list(impls), default=list(impls),
                        help=f"comma-separated subset of {','.join(impls)} (default: both)")
    parser.add_argument("--lengths", type=int_list, default=None,
                        help="tokens per sequence (default: CPU 512,2048,4096; GPU adds 8192)")
    parser.add_argument("--batch", type=positive_int, default=1, metavar="N",
                        help="sequences per batch (default 1)")
    parser.add_argument("--corpus-docs", type=int, default=None, metavar="N",
                        help="documents in the corpus row (default: CPU 32, GPU 1024; 0: none)")
    parser.add_argument("--corpus-min-len", type=positive_int, default=16, metavar="N",
                        help="shortest document of the corpus row, in tokens")
    parser.add_argument("--corpus-max-len", type=positive_int, default=None, metavar="N",
                        help="longest document (default: CPU 512, GPU 4096)")
    parser.add_argument("--corpus-batch-size", type=positive_int, default=32, metavar="N",
                        help="documents per batch of the corpus row")
    parser.add_argument("--min-run-time", type=float, default=0.0, metavar="SECONDS",
                        help="CPU: use blocked_autorange for calls this fast (default 0: off)")
    parser.add_argument("--max-row-time", type=float, default=None, metavar="SECONDS",
                        help="CPU: stop adding timed calls once a row has spent this many "
                             "seconds (default 30; at least one call is always timed)")
    parser.add_argument("--isolate", action="store_true",
                        help="run every measurement in a fresh child process and report its peak "
                             "RSS (ru_maxrss)")
    parser.add_argument("--quick", action="store_true",
                        help="one timed call per row, 128 tokens and a corpus of 8 documents of "
                             "at most 128 tokens")


def _mlm_options(parser: argparse.ArgumentParser) -> None:
    _geometry_options(parser, hidden=256, layers=4, heads=4, intermediate=1024)
    parser.add_argument("--batch", type=positive_int, default=16, metavar="N",
                        help="sequences per step")
    parser.add_argument("--length", type=positive_int, default=128, metavar="N",
                        help="tokens per sequence of the equal case")
    parser.add_argument("--min-length", type=positive_int, default=16, metavar="N",
                        help="shortest document of the variable case")
    parser.add_argument("--max-length", type=positive_int, default=512, metavar="N",
                        help="longest document of the variable case")
    parser.add_argument("--mask-rate", type=float, default=0.3, metavar="RATE",
                        help="share of tokens predicted, in (0, 1)")
    parser.add_argument("--max-row-time", type=float, default=60.0, metavar="SECONDS",
                        help="CPU: stop adding timed steps once a row has spent this many "
                             "seconds (at least one is always timed)")
    parser.add_argument("--quick", action="store_true", help="one timed step per row")


def _compiled_options(parser: argparse.ArgumentParser) -> None:
    variants = IMPLEMENTATIONS["compiled"]
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, default=BUNDLED_CHECKPOINT, metavar="DIR",
                        help="checkpoint directory (default: the bundled random-weight one)")
    source.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="instead of --model: a config.json-style file, with init's random "
                             "weights (no onnxruntime)")
    parser.add_argument("--batches", type=int_list, default=[1, 2, 16],
                        help="comma-separated batch sizes (default: 1,2,16)")
    parser.add_argument("--lengths", type=int_list, default=[128, 512, 2048],
                        help="comma-separated padded lengths (default: 128,512,2048)")
    parser.add_argument("--variants", type=choice_list(variants), default=None,
                        help=f"compared with eager, comma-separated (default: "
                             f"{','.join(variants)}; on CUDA or with --config regional,whole)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    add_dtype(parser)
    add_attention(parser)
    parser.add_argument("--min-samples", type=positive_int, default=5, metavar="N",
                        help="rounds of timed calls per row at least")
    parser.add_argument("--max-time", type=float, default=60.0, metavar="SECONDS",
                        help="no new round once a row's rounds took this many seconds")
    parser.add_argument("--max-dense-bytes", type=float, default=None, metavar="BYTES",
                        help="skip whole and onnxruntime where their dense attention scores "
                             "would exceed this (default: CPU min(8 GiB, RAM / 3), GPU 80%% of "
                             "its memory)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads of torch and onnxruntime (default: torch's)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="compile with an empty inductor cache, so the first compile is cold")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.json",
                        help="result .json file, rewritten after every row")


def _compile_options(parser: argparse.ArgumentParser) -> None:
    from .compile import ALL_KINDS, DTYPES

    parser.add_argument("--target", default="sm_90", help="GPU target (default sm_90)")
    parser.add_argument("--kinds", type=choice_list(ALL_KINDS), default=list(ALL_KINDS),
                        help=f"kernels, comma-separated (default {','.join(ALL_KINDS)})")
    parser.add_argument("--dtypes", type=dtype_list(short=True), default=list(DTYPES),
                        help=f"operand dtypes, comma-separated {spellings()} (default "
                             f"{','.join(DTYPES)})")
    parser.add_argument("--head-dims", type=int_list, default=[64, 128],
                        help="head dims (default 64,128)")
    parser.add_argument("--first-config", action="store_true",
                        help="only the first config each kernel keeps (the quick check)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                        help="also write the JSON report here")
    parser.add_argument("--estimate", type=Path, default=None, metavar="REPORT",
                        help="compile nothing: price the first-call compiles of --steps with "
                             "the recorded report REPORT")
    parser.add_argument("--steps", type=Path, default=None, metavar="FILE",
                        help="with --estimate: lines of NAME LIMIT KINDS:DTYPES:HEAD_DIMS:WINDOWS")
    parser.add_argument("--measure-min", type=float, default=15.0, metavar="SECONDS",
                        help="with --estimate: seconds of measuring a step needs beyond its "
                             "compiles (default 15)")


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Every benchmark subcommand, on ``parser`` (``python -m mosaic_encoder.bench``'s own, or
    ``mosaic-encoder bench``)."""
    commands = parser.add_subparsers(dest="bench_command", required=True, metavar="SUBCOMMAND")
    common = _common_options()
    attention = commands.add_parser(
        "attention", parents=[common], help="varlen ALiBi attention, five implementations",
        description="Benchmark varlen ALiBi attention implementations (time, TFLOP/s, peak "
                    "memory, error against the float64 reference).")
    _attention_options(attention)
    model = commands.add_parser(
        "model", parents=[common], help="whole encoder against the dense baseline",
        description="Benchmark a full encoder forward (tokens/s, peak memory) against the dense "
                    "upstream-style baseline, at fixed lengths and on a mixed-length corpus.")
    _model_options(model)
    mlm = commands.add_parser(
        "mlm", parents=[common], help="masked-LM training step against BertForMaskedLM",
        description="Benchmark a masked-LM training step (tokens/s, peak memory) against "
                    "transformers' BertForMaskedLM (SDPA) on the same weights and batches.")
    _mlm_options(mlm)
    _compiled_options(commands.add_parser(
        "compiled", help="regional and whole-model torch.compile and onnxruntime against eager",
        description="Time an encoder eagerly, with regional and whole-model torch.compile and "
                    "through onnxruntime, in turns within one process."))
    _compile_options(commands.add_parser(
        "compile", help="compile every kernel config for a GPU target, offline",
        description="Compile every config of every attention kernel for a GPU target with the "
                    "installed Triton (no GPU needed) and print, per config, registers, spills "
                    "inside and outside the main loop, shared memory, wgmma use, SASS "
                    "instructions per main-loop iteration and compile seconds."))
    report = commands.add_parser("report", help="Markdown tables of result files",
                                 description="Print Markdown tables of result files.")
    report.add_argument("results", nargs="+", type=Path, metavar="RESULT.json",
                        help="result .json files")
    plots = commands.add_parser("plots", help="PNG charts of result files",
                                description="Turn result files into PNG charts.")
    plots.add_argument("results", nargs="+", type=Path, metavar="RESULT.json",
                       help="result .json files")
    plots.add_argument("--out", type=Path, required=True, metavar="DIR",
                       help="directory for the PNG files")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m mosaic_encoder.bench``."""
    parser = CommandParser(prog=COMMAND, description=DESCRIPTION)
    add_subcommands(parser)
    return parser


def add_parser(commands) -> None:
    """Register ``bench`` and its subcommands on the ``mosaic-encoder`` command line."""
    bench = commands.add_parser("bench", help=f"benchmarks: bench {'|'.join(SUBCOMMANDS)} ...",
                                description=DESCRIPTION)
    add_subcommands(bench)
    bench.set_defaults(run=lambda args: run(args, args.argv[args.argv.index("bench") + 1:]))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mosaic_encoder.bench``: see :func:`run`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return run(args, argv)
    except MosaicError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the parsed subcommand (``argv``, the arguments after ``bench``, is recorded in result
    files).

    Returns the exit status: for a benchmark 0 when the run completed (unsupported rows
    included), 1 when a row failed unexpectedly or an error is out of tolerance.
    Raises:
        MosaicError: a result file cannot be read, or options that parse but cannot run.
    """
    command = args.bench_command
    if command == "model" and args.window in ("always", "all"):
        raise InputError("--window always and all apply to the attention benchmark; the "
                         "model's attention_window is on or off.")
    if command == "compiled":
        from .compiled import run as run_compiled

        return run_compiled(args)
    if command == "compile":
        from .compile import run_compile

        return run_compile(args)
    if command in ("report", "plots"):
        return _render(args)
    from .measure import device_name, resolve_device
    from .results import summarize, write_results

    if command == "attention":
        from .attention import run_attention as run_benchmark
    elif command == "mlm":
        from .mlm import run_mlm as run_benchmark
    else:
        from .model import run_model as run_benchmark
    device = resolve_device(args.device)
    if args.out is None and device.type == "cuda":
        # GPU figures are the ones worth keeping: recorded by default, named by the card.
        card = "".join(c if c.isalnum() else "-" for c in device_name(device).lower()).strip("-")
        args.out = GPU_RESULTS / f"{command}-{card}.json"
    document = run_benchmark(args, argv)
    if args.out:
        json_path, csv_path = write_results(document, args.out)
        print(f"# wrote {json_path} and {csv_path}", flush=True)
    return summarize(document["rows"])


def _render(args: argparse.Namespace) -> int:
    """``report`` (Markdown on stdout) or ``plots`` (PNG files) of result files."""
    from .results import load_results

    try:
        documents = [(path, load_results(path)) for path in args.results]
    except (OSError, ValueError) as err:  # missing, unreadable or not a result file
        raise InputError(str(err)) from None
    if args.bench_command == "report":
        from .report import render

        for _, document in documents:
            print(render(document))
        return 0
    from .plots import save_figures

    for path, document in documents:
        for written in save_figures(document, args.out, stem=path.stem, source=path.name):
            print(written)
    return 0
