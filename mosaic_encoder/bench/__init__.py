"""Benchmark harness: the attention implementations and the whole encoder, timed and measured.

Above the model in the layering: it imports :mod:`mosaic_encoder` and :mod:`mosaic_kernels`,
never the other way round. Modules: :mod:`.attention` and :mod:`.model` (the two benchmarks),
:mod:`.measure` (timers, memory, environment), :mod:`.flops` (FLOP accounting), :mod:`.results`
(rows and result files), :mod:`.report` (Markdown tables), :mod:`.plots` (charts, needs
matplotlib) and :mod:`.cli` (the command line, ``python -m mosaic_encoder.bench``).
"""
