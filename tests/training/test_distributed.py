"""torchrun with two CPU processes on gloo trains exactly like one process with the whole batch."""

from mosaic_encoder.training.config import TrainConfig
from mosaic_encoder.training.contrastive import train

from helpers import assert_two_gloo_processes_equal_one, pairs, write_jsonl


def test_two_gloo_processes_equal_one(tmp_path, tiny_no_dropout):
    """Hard negatives (one and two columns), the symmetric Matryoshka loss and the gradient
    cache included: every rank's rows are gathered, and the cache's chunk backward passes run
    under DDP's no_sync."""
    two_negatives = [dict(row, negative_1=row.pop("negative"), negative_2=f"c remark {i}")
                     for i, row in enumerate(pairs(16, "c ", negatives=True))]
    data = [write_jsonl(tmp_path / "a.jsonl", pairs(24, "a ", negatives=True)),
            write_jsonl(tmp_path / "b.jsonl", pairs(16, "b ")),
            write_jsonl(tmp_path / "c.jsonl", two_negatives)]
    held_out = write_jsonl(tmp_path / "held.jsonl", pairs(6, "h "))
    settings = dict(batch_size=8, max_seq_length=32, steps=4, warmup_steps=1, save_every=2,
                    learning_rate=2e-5, seed=3, loss="symmetric", matryoshka_dims=(192, 32))
    single = train(TrainConfig(model=tiny_no_dropout, data=tuple(data), output=tmp_path / "one",
                               eval_data=held_out, progress=False, **settings))
    assert len(single.records) == 4
    log = assert_two_gloo_processes_equal_one(
        ["train", "--model", str(tiny_no_dropout), "--data", *map(str, data),
         "--eval-data", str(held_out), "--chunk-size", "3", "--no-progress",
         "--batch-size", "8", "--max-seq-length", "32", "--steps", "4", "--warmup-steps", "1",
         "--save-every", "2", "--lr", "2e-5", "--seed", "3", "--loss", "symmetric",
         "--matryoshka-dims", "192", "32"],
        single, tmp_path / "one", tmp_path / "two")
    assert len([r for r in log if "eval_mrr" in r]) == 2  # before and after; rank 0 only
