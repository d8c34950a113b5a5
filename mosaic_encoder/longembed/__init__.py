"""Does an embedding model use its long context? LongEmbed's synthetic retrieval tasks, offline.

LongEmbed (Zhu et al. 2024, arXiv 2404.12096; in MTEB as LEMBPasskeyRetrieval and
LEMBNeedleRetrieval) hides one sentence that answers a query at some depth of a long document and
asks the model to find that document among 100 candidates, at lengths from 256 tokens up. Here
both tasks are generated from a seed, nothing downloaded:

- :mod:`.documents`: documents of a length in the model's tokens, a needle at a depth;
- :mod:`.passkey`, :mod:`.needle` (with :mod:`.names`): the two tasks;
- :mod:`.metrics`: nDCG@1, recall@1 and MRR with ties broken in expectation;
- :mod:`.evaluation`: embedding and scoring by length and depth;
- :mod:`.cli`, :mod:`.plot`: ``mosaic-encoder eval-longembed`` and its chart;
- :mod:`.pairs`: long (first sentence, rest of document) training pairs from the standard
  library, for fine-tuning at length.
"""
