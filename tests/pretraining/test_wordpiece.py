from mosaic_encoder.pretraining.masking import SPECIAL_TOKENS
from mosaic_encoder.pretraining.wordpiece import train_wordpiece
from mosaic_encoder.tokenizer import TextTokenizer

from .conftest import write_corpus


def test_trained_tokenizer_wraps_texts_like_bert(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", 50)
    folder = train_wordpiece([corpus], 300, tmp_path / "tokenizer")
    tokenizer = TextTokenizer(folder / "tokenizer.json")
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.vocab_size <= 300
    ids = tokenizer.encode_ids(["The QUICK brown fox"])[0][0]
    assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids  # [CLS] ... [SEP], no [UNK]
    assert tokenizer.encode_ids(["the quick"])[0] == tokenizer.encode_ids(["THE Quick"])[0]
    assert (folder / "vocab.txt").read_text().splitlines()[:5] == list(SPECIAL_TOKENS)
