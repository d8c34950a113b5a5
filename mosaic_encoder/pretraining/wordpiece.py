"""A BERT-style WordPiece tokenizer trained on a corpus, for small experiments.

A small model spends most of its time on the vocabulary (the embedding's optimizer update, and
the decoder over every masked token); a vocabulary fitted to the corpus makes a miniature
experiment affordable. The tokenizer normalises and splits text as BERT's uncased tokenizer does
and wraps each text as ``[CLS] text [SEP]``; ids 0-4 are ``[PAD] [UNK] [CLS] [SEP] [MASK]``.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(files: list[Path], vocab_size: int, output: Path) -> Path:
    """Train on ``files`` (text, a document a line) and write ``output/tokenizer.json``,
    ``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``; returns ``output``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                        show_progress=False)
    tokenizer.train([str(path) for path in files], trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    output.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(output / "tokenizer.json"))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (output / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab),
                                      encoding="utf-8")
    names = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                 mask_token="[MASK]")
    (output / "special_tokens_map.json").write_text(json.dumps(names, indent=2) + "\n",
                                                    encoding="utf-8")
    (output / "tokenizer_config.json").write_text(
        json.dumps(dict(names, do_lower_case=True, tokenizer_class="BertTokenizer"), indent=2)
        + "\n", encoding="utf-8")
    return output
