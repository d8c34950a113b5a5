"""The command line's parsers, as a user meets them before anything runs: built without torch,
one usage per subcommand, help and default on every flag, the same dtype spellings everywhere."""

import argparse
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from mosaic_encoder.arguments import CommandParser, HelpFormatter
from mosaic_encoder.bench import cli as bench_cli
from mosaic_encoder.bench.names import SUBCOMMANDS
from mosaic_encoder.cli import STDIN_PROMPT, build_parser

# Run the command line in a fresh interpreter where ``import torch`` fails: whatever answers
# there answered without torch.
WITHOUT_TORCH = ("import sys; sys.modules['torch'] = None; from {module} import main; "
                 "sys.exit(main(sys.argv[1:]))")


def run_without_torch(*args: str, module: str = "mosaic_encoder.cli"):
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH.format(module=module), *args],
                          capture_output=True, text=True, timeout=120)


def parsers(parser: argparse.ArgumentParser, name: str = "mosaic-encoder"):
    """(command line, parser) of ``parser`` and of every subcommand under it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, subparser in action.choices.items():
                yield from parsers(subparser, f"{name} {command}")


ALL = list(parsers(build_parser()))


def module_parsers():
    """The parsers of the ``python -m`` entry points beside ``mosaic-encoder``."""
    from mosaic_encoder.longembed import pairs, plot
    from mosaic_encoder.pretraining import experiment
    from mosaic_encoder.training import demo, memory

    defaults = experiment.Settings(output=Path("out"), work=Path("."))
    return [*parsers(bench_cli.build_parser(), "python -m mosaic_encoder.bench"),
            ("python -m mosaic_encoder.training.demo", demo.build_parser()),
            ("python -m mosaic_encoder.training.memory", memory.build_parser()),
            ("python -m mosaic_encoder.pretraining.experiment",
             experiment.build_parser(defaults)),
            ("python -m mosaic_encoder.longembed.pairs", pairs.build_parser()),
            ("python -m mosaic_encoder.longembed.plot", plot.build_parser())]


def test_every_parser_builds_without_torch():
    code = ("import sys; import mosaic_encoder.cli as c, mosaic_encoder.bench.cli as b; "
            "c.build_parser(); b.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'huggingface_hub') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch" not in done.stdout and "huggingface_hub" not in done.stdout


@pytest.mark.parametrize("args", [["--help"], ["encode", "--help"], ["train", "--help"],
                                  ["bench", "attention", "--help"], ["pretrain", "--help"],
                                  ["embed-corpus", "--help"], ["--version"]])
def test_help_answers_without_torch(args):
    done = run_without_torch(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: mosaic-encoder") or args == ["--version"]


@pytest.mark.parametrize("args,usage", [
    (["encode", "x", "--no-such-flag"], "usage: mosaic-encoder encode "),
    (["train", "--model", "m", "--data", "d", "--output", "o", "--bogus", "1"],
     "usage: mosaic-encoder train "),
    (["bench", "attention", "--lenghts", "8"], "usage: mosaic-encoder bench attention "),
    (["verify"], "usage: mosaic-encoder verify "),
    (["encode", "--dtype", "float64", "x"], "usage: mosaic-encoder encode "),
])
def test_a_usage_error_names_the_flag_with_the_subcommands_usage_without_torch(args, usage):
    done = run_without_torch(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(usage), done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(usage.removeprefix("usage: ").strip() + ": error: ")
    flags = [a for a in args if a.startswith("--")]  # the last is the one at fault
    assert not flags or flags[-1] in last


def test_the_bench_module_names_itself_and_the_flag():
    done = run_without_torch("attention", "--bogus", module="mosaic_encoder.bench.cli")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: python -m mosaic_encoder.bench attention ")
    assert "unrecognized arguments: --bogus" in done.stderr


def test_bench_help_is_under_mosaic_encoder_and_the_main_help_lists_every_kind():
    bench = dict(ALL)["mosaic-encoder bench"]
    assert bench.format_help().startswith("usage: mosaic-encoder bench ")
    assert tuple(dict(parsers(bench, "bench"))) == ("bench", *(f"bench {c}" for c in SUBCOMMANDS))
    assert f"bench {'|'.join(SUBCOMMANDS)}" in " ".join(build_parser().format_help().split())
    assert tuple(dict(parsers(bench_cli.build_parser(), "b"))) == \
        ("b", *(f"b {c}" for c in SUBCOMMANDS))


@pytest.mark.parametrize("name", [name for name, _ in ALL] + [
    "python -m mosaic_encoder.bench attention", "python -m mosaic_encoder.training.demo",
    "python -m mosaic_encoder.training.memory", "python -m mosaic_encoder.pretraining.experiment",
    "python -m mosaic_encoder.longembed.pairs", "python -m mosaic_encoder.longembed.plot"])
def test_every_flag_has_help_and_shows_its_default(name):
    parser = dict(ALL + module_parsers())[name]
    formatter = HelpFormatter(name)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        what = f"{name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{what} has no help text"
        if action.option_strings and action.default not in (None, False, [],
                                                             argparse.SUPPRESS):
            assert "default" in formatter._get_help_string(action), f"{what} hides its default"
    parser.format_help()  # every %(default)s and %% in the help texts renders


DTYPE_FLAGS = {"mosaic-encoder encode": [], "mosaic-encoder fill-mask": ["[MASK]"],
               "mosaic-encoder embed-corpus": ["in.jsonl", "out", "--model", "m"],
               "mosaic-encoder train": ["--model", "m", "--data", "d", "--output", "o"],
               "mosaic-encoder bench model": []}


@pytest.mark.parametrize("name", DTYPE_FLAGS)
@pytest.mark.parametrize("spelling,dtype", [("bf16", "bfloat16"), ("bfloat16", "bfloat16"),
                                            ("fp32", "float32"), ("FLOAT32", "float32")])
def test_every_dtype_flag_takes_the_same_spellings(name, spelling, dtype):
    parser = dict(ALL)[name]
    assert parser.parse_args([*DTYPE_FLAGS[name], "--dtype", spelling]).dtype == dtype


def test_dtype_lists_take_the_same_spellings():
    parser = bench_cli.build_parser()
    assert parser.parse_args(["attention", "--dtypes", "bf16,float32"]).dtypes == \
        ["bfloat16", "float32"]
    assert parser.parse_args(["compile", "--dtypes", "bfloat16,fp16"]).dtypes == ["bf16", "fp16"]


def test_train_refuses_a_dtype_it_does_not_train_in(capsys):
    with pytest.raises(SystemExit) as done:
        dict(ALL)["mosaic-encoder train"].parse_args(
            ["--model", "m", "--data", "d", "--output", "o", "--dtype", "fp16"])
    assert done.value.code == 2
    assert "must be one of auto, bfloat16, float32 (or fp32, bf16), got 'fp16'" in \
        capsys.readouterr().err


def test_subparsers_are_command_parsers():
    assert all(isinstance(parser, CommandParser) for _, parser in ALL)


def test_encode_at_a_terminal_says_it_reads_standard_input():
    """With no text and a terminal on stdin, encode says what it waits for, then reads the
    lines typed until Ctrl-D."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mosaic_encoder.cli", "encode"],
                               stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(terminal)
    ready, _, _ = select.select([process.stderr], [], [], 120)
    assert ready, "no message within two minutes"
    assert process.stderr.readline().decode().strip() == STDIN_PROMPT
    os.write(controller, b"typed text\n\x04")  # a line, then Ctrl-D at the start of a line
    out, err = process.communicate(timeout=300)
    os.close(controller)
    assert process.returncode == 0, err
    assert out.decode().startswith('{"text": "typed text", "embedding": [')
