"""Opening checkpoint files: regular files inside the directory, bounded JSON, printable names."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mosaic_encoder import CheckpointError
from mosaic_encoder.files import file_sha256, inside, printable, read_json, regular_file, short


@given(st.text())
def test_printable_text_has_no_character_a_terminal_acts_on(text):
    shown = printable(text)
    assert all(c.isprintable() or c == " " for c in shown)
    if text.isprintable():
        assert shown == text


def test_names_keep_their_letters_and_lose_their_escapes():
    assert printable("encoder.layer.0.café 中文") == "encoder.layer.0.café 中文"
    assert printable("a\nb\x1b[31mc\u202e") == "a\\nb\\x1b[31mc\\u202e"
    assert short("x\n" * 40) == ("x\\n" * 19)[:57] + "..."


def test_a_nul_byte_in_a_path_is_one_sentence(tmp_path):
    with pytest.raises(CheckpointError, match="holds a NUL byte"):
        regular_file(tmp_path / "a\0b", "config file")
    with pytest.raises(CheckpointError, match="holds a NUL byte"):
        inside(tmp_path / "a\0b", tmp_path, "module path")


def test_a_symlink_loop_is_one_sentence(tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(CheckpointError, match="loop is a symlink loop"):
        read_json(tmp_path / "loop", "modules file", tmp_path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        regular_file(tmp_path / "loop", "modules file")


def test_messages_escape_the_path(tmp_path):
    with pytest.raises(CheckpointError) as caught:
        regular_file(tmp_path / "x\n\x1b[31mTraceback", "config file")
    assert "\n" not in str(caught.value) and "\\x1b[31mTraceback" in str(caught.value)


def test_file_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert file_sha256(tmp_path / "f") == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
