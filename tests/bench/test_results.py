"""The results module's docstring is the schema of the result files: it names every column of
each kind of row in that kind's section."""

import re

import pytest

from mosaic_encoder.bench import results
from mosaic_encoder.bench.attention import ATTENTION_FIELDS
from mosaic_encoder.bench.model import MODEL_FIELDS

DOCUMENT, _, ROWS = results.__doc__.partition("Attention rows")
ATTENTION_SECTION, _, MODEL_SECTION = ROWS.partition("Model rows")


def documented(section: str) -> set[str]:
    return set(re.findall(r"``([a-z_0-9]+)``", section))


@pytest.mark.parametrize("fields, section", [(ATTENTION_FIELDS, ATTENTION_SECTION),
                                             (MODEL_FIELDS, MODEL_SECTION)],
                         ids=["attention", "model"])
def test_every_column_is_documented(fields, section):
    assert MODEL_SECTION
    names = documented(section) | {"kind"}  # ``kind`` is documented once, for the document
    assert [field for field in fields if field not in names] == []
