"""torchrun with two CPU processes on gloo pretrains exactly like one process, dropout off."""

from mosaic_encoder.pretraining.config import PretrainConfig
from mosaic_encoder.pretraining.run import pretrain

from helpers import assert_two_gloo_processes_equal_one

from .conftest import write_corpus


def test_two_gloo_processes_equal_one(tmp_path, tiny_mlm):
    """Two corpus files, gradient accumulation, a checkpoint in the middle: every process builds
    the same masked global batch and takes its half."""
    data = [write_corpus(tmp_path / "a.txt", 60), write_corpus(tmp_path / "b.txt", 30, seed=4)]
    settings = dict(batch_size=8, max_seq_length=32, steps=4, save_every=2, learning_rate=1e-3,
                    seed=3, accumulation=2)
    single = pretrain(PretrainConfig(model=tiny_mlm, data=tuple(data), output=tmp_path / "one",
                                     progress=False, **settings))
    assert len(single.records) == 4
    assert_two_gloo_processes_equal_one(
        ["pretrain", "--model", str(tiny_mlm), "--data", *map(str, data), "--no-progress",
         "--batch-size", "8", "--max-seq-length", "32", "--steps", "4", "--save-every", "2",
         "--lr", "1e-3", "--seed", "3", "--accumulation", "2"],
        single, tmp_path / "one", tmp_path / "two")
