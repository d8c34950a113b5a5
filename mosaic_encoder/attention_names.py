"""The names of the attention implementations, as ``attention_impl`` and ``--attention`` spell
them.

Nothing here imports torch, so that command-line parsers build without it. The registry itself,
:data:`mosaic_encoder.attention.IMPLEMENTATIONS`, holds one entry per name of
:data:`IMPLEMENTATION_NAMES` (``tests/test_attention.py`` checks that they agree); ``auto`` picks
one of them per call.
"""

IMPLEMENTATION_NAMES = ("sdpa", "triton")
ATTENTION_IMPLS = ("auto", *IMPLEMENTATION_NAMES)
