import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mosaic_encoder.errors import InputError
from mosaic_encoder.pretraining.documents import DocumentFile, check_corpus


def test_three_formats_give_the_same_documents(tmp_path):
    texts = ["first document", "second, with a comma", "third"]
    (tmp_path / "c.txt").write_text("first document\n\nsecond, with a comma\r\n  \nthird")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"body": t, "id": i}) + "\n"
                                              for i, t in enumerate(texts)) + "\n")
    pq.write_table(pa.table({"body": texts + [" "], "n": [1, 2, 3, 4]}), tmp_path / "c.parquet",
                   row_group_size=2)
    assert list(DocumentFile.open(tmp_path / "c.txt")) == texts
    assert list(DocumentFile.open(tmp_path / "c.jsonl", "body")) == texts
    assert list(DocumentFile.open(tmp_path / "c.parquet", "body")) == texts


@pytest.mark.parametrize("name,content,field,message", [
    ("c.csv", "a,b\n", "text", "must end in .txt, .jsonl or .parquet"),
    ("c.jsonl", '{"text": "ok"}\n{"body": "x"}\n', "text", "line 2 has no string field 'text'"),
    ("c.jsonl", '{"text": "ok"}\nnot json\n', "text", "line 2 is not valid JSON"),
    ("c.txt", "", "text", "holds no documents"),
])
def test_bad_files_are_one_sentence(tmp_path, name, content, field, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        check_corpus([DocumentFile.open(path, field)])


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        DocumentFile.open(tmp_path / "nothing.txt")
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        DocumentFile.open(tmp_path / "dir.txt")


def test_parquet_column_must_hold_strings(tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(InputError, match="not strings"):
        check_corpus([DocumentFile.open(tmp_path / "n.parquet")])
