"""The ``mosaic-encoder`` command line.

Subcommands: ``encode`` (sentence embeddings), ``fill-mask`` (masked-LM predictions), ``verify``
(a checkpoint against the published manifests, config/tokenizer/numeric sanity, golden outputs),
``convert`` (``pytorch_model.bin`` to ``model.safetensors`` without running pickled code),
``export-onnx``, ``bench`` (the benchmarks of :mod:`mosaic_encoder.bench`), ``train`` and
``plot-run`` (contrastive fine-tuning, :mod:`mosaic_encoder.training`), ``embed-corpus``
(:mod:`mosaic_encoder.corpus`), and ``init``, ``pretrain`` and ``eval-mlm`` (masked-LM
pretraining, :mod:`mosaic_encoder.pretraining`).

Every error a user can cause is one sentence on stderr and a non-zero exit (1, or 2 for a usage
error, printed with the usage of the subcommand at fault), with nothing on stdout and no file
left behind: files are written to a temporary name and renamed into place.

The parsers build without importing torch, so that ``--help`` and usage errors answer at once:
a subcommand registers with one call of its module's ``add_parser(commands)`` in
:func:`build_parser`, and that module imports torch (and everything that does) only inside the
function its parser runs (``set_defaults(run=...)``). ``tests/test_cli_parsers.py`` checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .arguments import (CommandParser, add_embedding_batches, add_model, add_revision, add_runtime,
                        compute_device, positive_int)
from .arguments import max_seq_length as max_seq_length_arg
from .atomic import atomic_write
from .bundled import BUNDLED_CHECKPOINT, BUNDLED_MLM_CHECKPOINT
from .attention_names import ATTENTION_IMPLS
from .errors import NON_FINITE_ADVICE, InputError, MosaicError, NonFiniteError
from .files import file_sha256, printable, resolve
from .inputs import open_input, read_json_texts, read_texts

ENCODE_OUTPUTS = (".npy", ".jsonl", ".safetensors")
# What a terminal user is told when a command waits for texts on standard input.
STDIN_PROMPT = ("reading texts from standard input, one per line; end with Ctrl-D (Ctrl-Z then "
                "Enter on Windows), or pass texts as arguments or with --input.")


# --- input ------------------------------------------------------------------------------------


def _read_texts(args: argparse.Namespace) -> list[str]:
    """Texts from the arguments, ``--input FILE`` or standard input (see :mod:`.inputs`).

    One rule for every source: blank texts are kept in place (an empty text; output row i is
    input i, argument or line), but an input without any non-blank text is an error.
    """
    if args.texts and args.input:
        raise InputError("give texts either as arguments or with --input, not both.")
    if args.texts:
        source = "the text arguments"
        for number, text in enumerate(args.texts, start=1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise InputError(f"text argument {number} is not UTF-8 (byte "
                                 f"0x{ord(text[err.start]) - 0xDC00:02x} at position "
                                 f"{err.start}).") from None
        texts = list(args.texts)
    elif args.input:
        source = f"input file {args.input}"
        suffix = Path(args.input).suffix
        with open_input(args.input, pipe=True) as stream:
            if suffix == ".json":
                texts = read_json_texts(stream, source, args.field)
            else:
                texts = read_texts(stream, source, args.field if suffix == ".jsonl" else None)
    else:
        source = "standard input"
        texts = _read_stdin()
    if not texts:
        raise InputError(f"no input texts were given ({source} is empty; pass texts as arguments, "
                         f"with --input or on standard input).")
    if not any(text.strip() for text in texts):
        held = "every text argument is blank" if args.texts else f"{source} holds only blank lines"
        raise InputError(f"no input texts were given ({held}).")
    return texts


def _read_stdin() -> list[str]:
    if sys.stdin is None:  # started with standard input closed (`<&-`)
        raise InputError("standard input is closed; pass texts as arguments or with --input.")
    if sys.stdin.isatty():  # a person at a terminal, who may not know the command waits
        print(STDIN_PROMPT, file=sys.stderr, flush=True)
    try:
        return read_texts(sys.stdin.buffer, "standard input")
    except InputError:
        raise
    except (OSError, ValueError) as err:  # ValueError: a stream closed under us
        raise InputError(f"standard input cannot be read ({getattr(err, 'strerror', None) or err}"
                         f"); pass texts as arguments or with --input.") from None


def _write_stdout(text: str) -> None:
    """Write to standard output now, turning a failed write (a full disk) into one error line."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as err:
        # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise InputError(f"standard output cannot be written ({err.strerror or err}).") from None


def _model_dir(args: argparse.Namespace, bundled: Path) -> Path:
    """The directory of ``--model`` (a Hub id's cache snapshot, at ``--revision``), or the
    bundled checkpoint."""
    from .checkpoint import checkpoint_directory

    return checkpoint_directory(args.model or bundled, args.revision)


def _note_bundled(args: argparse.Namespace, bundled: Path) -> None:
    """Say so when the bundled checkpoint runs (after the input is known to be good)."""
    if not args.model:
        try:
            bundled = bundled.relative_to(Path.cwd())
        except ValueError:
            pass
        print(f"note: using the bundled random-weight checkpoint {bundled}; its outputs carry no "
              f"meaning (pass --model DIR for real weights).", file=sys.stderr)


# --- output -----------------------------------------------------------------------------------


def _check_output(path: Path, suffixes: tuple[str, ...]) -> None:
    """Fail before any work when the output file cannot be what was asked for."""
    if path.suffix not in suffixes:
        names = ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}"
        raise InputError(f"output file {path} must end in {names}.")
    if path.is_dir():
        raise InputError(f"output path {path} cannot be written (it is a directory).")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output path {path} cannot be written (directory {parent} does not "
                         f"exist).")


# --- encode -----------------------------------------------------------------------------------


def _check_encode_output(output: Path, args: argparse.Namespace, model: Path) -> None:
    """Refuse to replace a file without --force, and ever to write over the input or the model."""
    _check_output(output, ENCODE_OUTPUTS)
    target = resolve(output, "output file", InputError)
    source = Path(args.input) if args.input else None
    if source is not None and (target == resolve(source, "input file", InputError) or (
            output.exists() and source.exists() and os.path.samefile(output, source))):
        raise InputError(f"output file {output} is the input file; write somewhere else.")
    if target.is_relative_to(resolve(model, "checkpoint directory")):
        raise InputError(f"output file {output} lies inside the model directory {model}; write "
                         f"somewhere else.")
    if output.exists() and not args.force:
        raise InputError(f"output file {output} exists; pass --force to replace it.")


def _check_finite(embeddings) -> None:
    """Refuse (N, D) float32 embeddings holding NaN or infinity."""
    import numpy as np

    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise NonFiniteError(f"{int(bad.sum())} of {len(embeddings)} embeddings are not finite "
                             f"(NaN or Inf; the first is row {int(bad.argmax())}): "
                             f"{NON_FINITE_ADVICE}.")


def _encode(args: argparse.Namespace) -> int:
    import numpy as np

    from .sentence import SentenceEncoder

    model = _model_dir(args, BUNDLED_CHECKPOINT)
    output = Path(args.output) if args.output else None
    if output is not None:
        _check_encode_output(output, args, model)
    max_seq_length = max_seq_length_arg(args.max_seq_length)
    texts = _read_texts(args)
    device = compute_device(args.device)
    _note_bundled(args, BUNDLED_CHECKPOINT)
    encoder = SentenceEncoder(model, dtype=args.dtype, device=device, attention=args.attention,
                              max_seq_length=max_seq_length, compile=args.compile)
    embeddings = encoder.encode(texts, batch_size=args.batch_size,
                                max_tokens_per_batch=args.max_tokens, prompt=args.prompt,
                                prompt_name=args.prompt_name)
    if encoder.first_batch_seconds is not None:
        print(f"compiled: the first batch took {encoder.first_batch_seconds:.1f} s, compilation "
              f"included.", file=sys.stderr)
    _check_finite(embeddings)
    lines = (json.dumps({"text": t, "embedding": e.tolist()}, allow_nan=False) + "\n"
             for t, e in zip(texts, embeddings))
    if output is None:
        _write_stdout("".join(lines))
    elif output.suffix == ".npy":
        atomic_write(output, lambda stream: np.save(stream, embeddings))
    elif output.suffix == ".safetensors":
        from safetensors.numpy import save

        metadata = {"model": str(model), "texts": str(len(texts)),
                    "normalized": "true", "dtype": args.dtype}
        data = save({"embeddings": np.ascontiguousarray(embeddings, dtype=np.float32)}, metadata)
        atomic_write(output, lambda stream: stream.write(data))
    else:
        atomic_write(output, lambda stream: stream.writelines(l.encode() for l in lines))
    print(f"encoded {len(texts)} text(s) into {embeddings.shape[1]}-d embeddings"
          f"{f' -> {output}' if output else ''}; {encoder.last_truncated} truncated.",
          file=sys.stderr)
    return 0


# --- fill-mask --------------------------------------------------------------------------------


def _fill_mask(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointDir
    from .fill_mask import fill_mask, masked_token_ids
    from .loading import load_model
    from .tokenizer import TextTokenizer

    texts = _read_texts(args)
    device = compute_device(args.device)
    model_dir = _model_dir(args, BUNDLED_MLM_CHECKPOINT)
    checkpoint = CheckpointDir.open(model_dir)
    if not checkpoint.layout.masked_lm:
        raise InputError(f"checkpoint {model_dir} has no masked-LM head (cls.predictions.*), so "
                         f"it cannot fill masks; use a masked-LM checkpoint such as "
                         f"mosaic-bert-base-seqlen-2048.")
    max_seq_length = max_seq_length_arg(args.max_seq_length)
    tokenizer = TextTokenizer(checkpoint.transformer_dir / "tokenizer.json", max_seq_length)
    masked_token_ids(tokenizer, texts)  # refuse texts without a mask before loading the model
    _note_bundled(args, BUNDLED_MLM_CHECKPOINT)
    model = load_model(checkpoint, dtype=args.dtype, device=device, attention=args.attention)
    results = [result.as_dict() for result in fill_mask(model, tokenizer, texts, args.top_k,
                                                        args.batch_size)]
    if args.json:
        _write_stdout("".join(json.dumps(result) + "\n" for result in results))
    else:
        _write_stdout("".join(_format_fill(result) for result in results))
    return 0


def _format_fill(result: dict) -> str:
    from .fill_mask import MASK_TOKEN

    lines = [result["text"]]
    count = len(result["masks"])
    for number, mask in enumerate(result["masks"], start=1):
        lines.append(f"  {MASK_TOKEN} {number} of {count} (token {mask['position']}):")
        lines += [f"    {p['probability']:.4f}  {p['token']}" for p in mask["predictions"]]
    return "\n".join(lines) + "\n"


# --- verify -----------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    from .checkpoint import checkpoint_directory
    from .verify import file_digests, verify_checkpoint

    device = compute_device(args.device)
    directory = checkpoint_directory(args.directory, args.revision)
    results = verify_checkpoint(directory, against=args.against, golden=args.golden,
                                device=device)
    digests = file_digests(directory)
    failed = [r for r in results if not r.passed]
    if args.json:
        print(json.dumps({"directory": str(directory), "passed": not failed,
                          "checks": [r.as_dict() for r in results],
                          "files": [d.as_dict() for d in digests]}, indent=1))
    else:
        width = max(len(r.name) for r in results)
        lines = [f"checkpoint {directory}"]
        lines += [f"  {'PASS' if r.passed else 'FAIL'}  {r.name:<{width}}  {r.detail}"
                  for r in results]
        lines.append("files (sha256, bytes)")
        size_width = max((len(f"{d.size:,}") for d in digests), default=0)
        lines += [f"  {d.sha256}  {d.size:>{size_width},}  {printable(d.path)}"
                  for d in digests]
        lines.append(f"{len(failed)} of {len(results)} checks failed: "
                     f"{', '.join(r.name for r in failed)}" if failed else
                     f"all {len(results)} checks passed")
        print("\n".join(lines))
    return 1 if failed else 0


# --- convert ----------------------------------------------------------------------------------


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    result = convert_checkpoint(args.source, output=args.output, overwrite=args.force)
    dtypes = ", ".join(f"{d}" if n == result.tensors else f"{d} x{n}"
                       for d, n in result.dtypes.items())
    tied = "; stored once: " + ", ".join(
        f"{printable(dropped)} (same memory as {printable(kept)})"
        for dropped, kept in result.dropped) if result.dropped else ""
    print(f"converted {result.source} -> {result.output}: {result.tensors} tensors ({dtypes}), "
          f"{result.parameters:,} parameters{tied}.")
    print(f"sha256 {file_sha256(result.output)}  {result.output}")
    return 0


# --- export-onnx ------------------------------------------------------------------------------


def _export_onnx(args: argparse.Namespace) -> int:
    from .export import export_onnx

    model = _model_dir(args, BUNDLED_CHECKPOINT)
    result = export_onnx(model, args.output, token_types=not args.no_token_types,
                         attention=args.attention, overwrite=args.force)
    _note_bundled(args, BUNDLED_CHECKPOINT)
    print(f"exported {model} -> {result.path}: inputs {', '.join(result.inputs)}; outputs "
          f"{', '.join(result.outputs)}; batch and sequence dynamic.", file=sys.stderr)
    return 0


# --- parser -----------------------------------------------------------------------------------


def _add_text_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", metavar="TEXT",
                        help="texts (default: --input FILE, else the lines of standard input)")
    parser.add_argument("--input", metavar="FILE",
                        help="read texts from FILE: one per line (blank lines are kept as empty "
                             "texts); JSON lines if it ends in .jsonl; a JSON array of texts (or "
                             "of records) if it ends in .json")
    parser.add_argument("--field", default="text",
                        help="the field holding the text in .jsonl and .json records")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="mosaic-encoder",
                           description="MosaicBERT / lodestone encoders in plain PyTorch.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    encode = commands.add_parser("encode", help="sentence embeddings of texts",
                                 description="Sentence embeddings (float32, L2-normalised).")
    _add_text_inputs(encode)
    add_model(encode)
    add_runtime(encode)
    add_embedding_batches(encode)
    encode.add_argument("--output", metavar="FILE",
                        help="write .npy, .jsonl or .safetensors (key 'embeddings') instead of "
                             "JSON lines on stdout (never the input file or into the model "
                             "directory)")
    encode.add_argument("--force", action="store_true", help="replace an existing output file")
    prompts = encode.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", metavar="TEXT",
                         help="text put before every input (e.g. 'query: ')")
    prompts.add_argument("--prompt-name", metavar="NAME",
                         help="one of the prompts saved in the checkpoint's "
                              "config_sentence_transformers.json (e.g. by train --query-prompt: "
                              "'query' or 'document'); its default_prompt_name applies otherwise")
    encode.add_argument("--compile", action="store_true",
                        help="compile each layer's token-wise work with torch.compile, "
                             "attention eager (the first batch compiles; what does not pay "
                             "runs eagerly)")
    encode.set_defaults(run=_encode)

    fill = commands.add_parser("fill-mask", help="top-k tokens for each [MASK] (masked-LM only)",
                               description="Masked-LM predictions for every [MASK] token.")
    _add_text_inputs(fill)
    add_model(fill, "masked-LM checkpoint")
    add_runtime(fill)
    fill.add_argument("--top-k", type=positive_int, default=5, metavar="K",
                      help="tokens per mask")
    fill.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                      help="texts per batch")
    fill.add_argument("--max-seq-length", metavar="N", default=None,
                      help="truncate longer inputs (default: no truncation)")
    fill.add_argument("--json", action="store_true", help="one JSON object per text")
    fill.set_defaults(run=_fill_mask)

    verify = commands.add_parser("verify", help="check a checkpoint directory",
                                 description="Check a checkpoint against the published manifests, "
                                             "config, tokenizer and numeric sanity, and optionally "
                                             "golden outputs. Exit 0 only when every check passes.")
    verify.add_argument("directory", metavar="DIR|ORG/NAME",
                        help="the checkpoint directory, or a Hugging Face Hub id (read from the "
                             "Hugging Face cache, or downloaded into it)")
    add_revision(verify)
    verify.add_argument("--against", metavar="NAME|MANIFEST",
                        help="a published checkpoint name (lodestone-base-4096-v1, "
                             "mosaic-bert-base-seqlen-2048) or a manifest .json (default: the "
                             "published one whose config matches, if any)")
    verify.add_argument("--golden", metavar="FILE",
                        help="reference outputs (.safetensors, CASE.FIELD keys) to compare with")
    verify.add_argument("--device", default="cpu", help="where the golden comparison runs")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.set_defaults(run=_verify)

    convert = commands.add_parser("convert", help="pytorch_model.bin -> model.safetensors, safely",
                                  description="Convert a torch pickle to safetensors with torch's "
                                              "weights-only loader: no pickled code runs, and a "
                                              "file that needs any is refused.")
    convert.add_argument("source", metavar="SOURCE",
                         help="a .bin file, or a directory holding pytorch_model.bin")
    convert.add_argument("--output", metavar="FILE",
                         help="where to write (default: model.safetensors beside the source)")
    convert.add_argument("--force", action="store_true", help="replace an existing output file")
    convert.set_defaults(run=_convert)

    export = commands.add_parser("export-onnx", help="write the model as ONNX (dynamic shapes)",
                                 description="Export a checkpoint to ONNX with dynamic batch and "
                                             "sequence axes: last_hidden_state, and the pooled, "
                                             "normalised sentence_embedding for sentence-"
                                             "transformers checkpoints.")
    export.add_argument("output", metavar="OUTPUT.onnx", help="the ONNX file to write")
    add_model(export)
    export.add_argument("--attention", choices=ATTENTION_IMPLS, default="sdpa",
                        help="only sdpa exports (auto is sdpa on the CPU)")
    export.add_argument("--no-token-types", action="store_true",
                        help="leave out the token_type_ids input (zeros are used)")
    export.add_argument("--force", action="store_true", help="replace an existing output file")
    export.set_defaults(run=_export_onnx)

    from .bench.cli import add_parser as add_bench
    add_bench(commands)
    from .training.cli import add_parser as add_train
    add_train(commands)
    from .training.plot import add_parser as add_plot_run
    add_plot_run(commands)
    from .corpus.command import add_parser as add_embed_corpus
    add_embed_corpus(commands)
    from .pretraining.cli import add_parsers as add_pretraining_parsers
    add_pretraining_parsers(commands)
    from .longembed.cli import add_parser as add_eval_longembed
    add_eval_longembed(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    if sys.stderr is None:  # started with stderr closed (2>&-): print(file=None) would write
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # our messages to stdout
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what bench records
    try:
        return args.run(args)
    except MosaicError as err:
        print(f"error: {printable(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
