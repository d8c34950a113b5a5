import base64
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer

from helpers import CHECKPOINTS, WEIGHTS
from mosaic_encoder import CheckpointError, InputError, MosaicError
from mosaic_encoder.tokenizer import TextTokenizer, TokenizerError, normalizer_growth


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_texts_tokenize_to_expected_ids(expected, texts, name):
    batch = TextTokenizer(WEIGHTS / name / "tokenizer.json", 4096)(texts)
    assert torch.equal(batch.input_ids, expected(name)["texts.input_ids"])
    assert torch.equal(batch.attention_mask, expected(name)["texts.attention_mask"])
    assert batch.truncated == 0


def test_special_tokens():
    tokenizer = TextTokenizer(WEIGHTS / "mosaic-tiny" / "tokenizer.json")
    ids = {t: tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    assert ids == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}


def test_truncation_counts_and_keeps_sep():
    tokenizer = TextTokenizer(WEIGHTS / "mosaic-tiny" / "tokenizer.json", max_length=8)
    batch = tokenizer(["one two three four five six seven eight nine", "short"])
    assert batch.input_ids.shape == (2, 8) and batch.truncated == 1
    assert batch.input_ids[0, -1] == 102 and batch.input_ids[1, :3].tolist() == [101, 2460, 102]


def test_bad_inputs(tmp_path):
    tokenizer = TextTokenizer(WEIGHTS / "mosaic-tiny" / "tokenizer.json")
    with pytest.raises(InputError, match="input 1 is a int"):
        tokenizer(["fine", 3])
    with pytest.raises(CheckpointError, match="does not exist"):
        TextTokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match="cannot be parsed"):
        TextTokenizer(tmp_path / "tokenizer.json")


def _hostile_tokenizer(tmp_path, **changes):
    """The bundled tokenizer.json with some of its components replaced."""
    config = json.loads((WEIGHTS / "mosaic-tiny" / "tokenizer.json").read_text(encoding="utf-8"))
    config.update(changes)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_tokenizer_panic_is_a_clear_error(tmp_path):
    """Oniguruma gives up on catastrophic backtracking; the Rust tokenizer then panics with a
    BaseException that `except Exception` would miss."""
    path = _hostile_tokenizer(tmp_path, pre_tokenizer={
        "type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False})
    tokenizer = TextTokenizer(path, max_length=4096)
    with pytest.raises(TokenizerError, match="failed on the input"):
        tokenizer(["a" * 40 + "b"])
    assert issubclass(TokenizerError, MosaicError)


@pytest.mark.parametrize("backtrace", ["0", "1", "full"])
def test_tokenizer_panic_prints_only_our_sentence(tmp_path, backtrace):
    """Rust's panic hook writes to file descriptor 2 (with RUST_BACKTRACE, 50 lines of
    backtrace); the command's stderr is still its one sentence."""
    directory = tmp_path / "ckpt"
    shutil.copytree(WEIGHTS / "mosaic-tiny", directory)
    _hostile_tokenizer(directory, pre_tokenizer={
        "type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False})
    run = subprocess.run([sys.executable, "-m", "mosaic_encoder.cli", "encode", "a" * 40 + "b",
                          "--model", str(directory)], capture_output=True, text=True,
                         env=dict(os.environ, RUST_BACKTRACE=backtrace))
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == (f"error: tokenizer file {directory / 'tokenizer.json'} failed on the "
                          f"input (Onig: Regex search error: retry-limit-in-match over).\n")


def test_held_stderr_is_replayed_unless_the_block_fails():
    """What descriptor 2 receives in a held block reaches stderr afterwards, in order, unless the
    block ends in a MosaicError; descriptor 2 is the real stderr again after either."""
    script = """
import os, sys
from mosaic_encoder.errors import InputError
from mosaic_encoder.tokenizer import native_stderr_held
print("before", file=sys.stderr)
with native_stderr_held():
    os.write(2, b"kept\\n")
try:
    with native_stderr_held():
        os.write(2, b"dropped\\n")
        raise InputError("bad")
except InputError:
    pass
try:
    with native_stderr_held():
        os.write(2, b"kept too\\n")
        raise KeyError("a bug")
except KeyError:
    pass
os.write(2, b"after\\n")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert run.stderr == "before\nkept\nkept too\nafter\n"


def test_expanding_normalizer_sees_a_bounded_prefix(tmp_path):
    """Each character becomes 10,000 (5,000 words): 2,000 characters cost about 900 MB when the
    whole text is tokenized; truncating at 16 tokens needs only the first few characters."""
    path = _hostile_tokenizer(tmp_path, normalizer={
        "type": "Replace", "pattern": {"Regex": "."}, "content": "a " * 5000})
    # VmHWM is this process's own peak; ru_maxrss would start at the pytest parent's size, and a
    # growth below that would read as none.
    script = f"""
import re
from mosaic_encoder.tokenizer import TextTokenizer
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1])
tokenizer = TextTokenizer({str(path)!r}, max_length=16)
before = peak_kib()
ids, _, truncated = tokenizer.encode_ids(["x" * 2000])
print(len(ids[0]), truncated, peak_kib() - before)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    tokens, truncated, grown_kib = map(int, run.stdout.split())
    assert (tokens, truncated) == (16, 1)
    assert grown_kib < 100 * 1024, f"peak RSS grew by {grown_kib} KiB"


def test_a_normaliser_growing_a_character_100000_times_is_one_sentence(tmp_path):
    """The hostile-input probe: Replace of 'a' by 100,000 characters. A 4,096-character prefix
    would normalise to 409.6 million characters (4.7 GB, then an abort with no message); the
    prefix handed to the library is bounded, and the text is refused in one sentence."""
    directory = tmp_path / "ckpt"
    shutil.copytree(WEIGHTS / "mosaic-tiny", directory)
    _hostile_tokenizer(directory, normalizer={
        "type": "Replace", "pattern": {"String": "a"}, "content": "b" * 100_000})
    # The peak is this process's own (VmHWM): ru_maxrss would start at the pytest parent's size.
    run = subprocess.run([sys.executable, "-c", """
import re, sys
from mosaic_encoder.cli import main
code = main(["encode", "a" * 5000, "--model", sys.argv[1]])
status = open("/proc/self/status").read()
print(re.search(r"VmHWM:\\s+(\\d+) kB", status)[1], file=sys.stderr)
sys.exit(code)
""", str(directory)], capture_output=True, text=True, timeout=300)
    error, peak_kib = run.stderr.strip().splitlines()
    assert run.returncode == 1 and run.stdout == "", run.stderr
    assert error == (f"error: input 0: the normaliser of {directory / 'tokenizer.json'} may grow "
                     f"its first 40 characters past 4,194,304 before they give 4096 tokens; "
                     f"this tokenizer cannot take such a text.")
    assert int(peak_kib) < 1024 * 1024, f"peak RSS {peak_kib} KiB"
    assert TextTokenizer(directory / "tokenizer.json", 4096)(["no such letter here"]).truncated == 0


@pytest.mark.parametrize("normalizer,growth", [
    (None, (1, 0)),
    ({"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
      "strip_accents": None, "lowercase": True}, (3, 0)),
    ({"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Prepend", "prepend": "▁"},
                                          {"type": "Lowercase"}]}, (36, 2)),
    ({"type": "Replace", "pattern": {"Regex": ""}, "content": "xy"}, (3, 2)),
    ({"type": "Precompiled", "precompiled_charsmap": base64.b64encode(
        struct.pack("<I", 0) + b"ab\0" + "é".encode() * 7 + b"\0").decode()}, (7, 0)),
])
def test_normaliser_growth_is_read_from_its_configuration(normalizer, growth):
    assert normalizer_growth(normalizer) == growth


def test_a_normaliser_type_without_a_known_growth_is_refused():
    """The library refuses unknown types when it reads the file; one added in a later version
    is refused here rather than let through unbounded."""
    with pytest.raises(ValueError, match="normaliser type 'Future'"):
        normalizer_growth({"type": "Sequence", "normalizers": [{"type": "NFC"},
                                                               {"type": "Future"}]})


def test_an_untruncated_text_past_the_normaliser_budget_is_one_sentence(tmp_path):
    path = _hostile_tokenizer(tmp_path, normalizer={"type": "NFKC"})
    with pytest.raises(InputError, match="input 1 has 300,000 characters, which the "
                                         "normaliser of .* may grow past 4,194,304"):
        TextTokenizer(path).encode_ids(["short", "x" * 300_000])


TEXT_PIECES = st.sampled_from(["the", "cat", "sat", ",", ".", " ", "  ", "\n", "\t", "naïve",
                               "ﬃ", "東京", "e\u0301", "x" * 120, "supercalifragilistic",
                               "##", "[MASK]", "İ", "\u200b", "🙂"])


@given(pieces=st.lists(TEXT_PIECES | st.text(max_size=6), max_size=60),
       max_length=st.integers(2, 24))
def test_bounded_prefix_truncates_exactly_like_the_whole_text(pieces, max_length):
    """Handing the tokenizer a prefix never changes the kept tokens of ordinary text."""
    text = " ".join(pieces)
    path = WEIGHTS / "mosaic-tiny" / "tokenizer.json"
    reference = Tokenizer.from_file(str(path))
    reference.enable_truncation(max_length)
    expected = reference.encode(text)
    ids, types, truncated = TextTokenizer(path, max_length).encode_ids([text])
    assert ids == [expected.ids] and types == [expected.type_ids]
    assert truncated == int(bool(expected.overflowing))


def test_lone_surrogates_are_refused():
    tokenizer = TextTokenizer(WEIGHTS / "mosaic-tiny" / "tokenizer.json")
    with pytest.raises(InputError, match="input 1 is not valid Unicode text"):
        tokenizer(["fine", "bad \udcff byte"])


def test_lower_case_is_applied_before_the_tokenizer(tmp_path):
    """A cased tokenizer (normaliser without lower-casing) sees lower-cased text with lower_case,
    as sentence-transformers gives it for ``do_lower_case``."""
    values = json.loads((WEIGHTS / "mosaic-tiny" / "tokenizer.json").read_text(encoding="utf-8"))
    values["normalizer"]["lowercase"] = False
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(values), encoding="utf-8")
    texts = ["The Cat SITS outside."]
    plain = TextTokenizer(path, 16)
    lowered = TextTokenizer(path, 16, lower_case=True)
    assert plain(texts).input_ids.tolist() != plain([t.lower() for t in texts]).input_ids.tolist()
    assert lowered(texts).input_ids.tolist() == plain([t.lower() for t in texts]).input_ids.tolist()
