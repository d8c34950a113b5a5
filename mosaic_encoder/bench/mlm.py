"""Masked-LM training-step benchmark: our model against ``transformers``' ``BertForMaskedLM``.

``python -m mosaic_encoder.bench mlm`` (or ``mosaic-encoder bench mlm``). Both models hold the
same weights (the classic variant, the only one ``transformers`` has; see
:mod:`mosaic_encoder.pretraining.reference`), run with SDPA attention, and see the same batches
with the same masks, in one invocation. A step is the whole of a training step: zeroed
gradients, forward, masked-LM loss, backward and an AdamW update. Two cases:

* ``equal``: ``--batch`` sequences of ``--length`` tokens, no padding (the packed pretraining
  batches);
* ``variable``: ``--batch`` documents with lengths drawn uniformly from [``--min-length``,
  ``--max-length``], padded to the longest for ``transformers``; ours removes the padding.

``transformers`` computes (tokens, vocabulary) logits for every position and takes the loss on
the masked ones; ours runs the decoder on the masked tokens only. On CUDA both run under
bfloat16 autocast with float32 weights (as ``pretrain`` trains). Rows report real tokens per
second of a step and the step's peak memory (:func:`.measure.peak_memory`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..config import CLASSIC_BERT, MosaicConfig
from ..errors import InputError
from ..pretraining.initialise import new_masked_lm
from ..pretraining.masking import MaskedBatch, Masker, MaskingRates
from ..pretraining.objective import MaskedLMObjective
from ..pretraining.reference import bert_for_masked_lm
from .measure import environment, peak_memory, resolve_device, time_call
from .names import IMPLEMENTATIONS
from .results import first_line, new_document

IMPLS = IMPLEMENTATIONS["mlm"]
SPECIAL_IDS = (0, 100, 101, 102, 103)  # BERT's [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID = 103
FIRST_ORDINARY = max(SPECIAL_IDS) + 1  # the batches draw their tokens from here up


def batches(args: argparse.Namespace, generator: torch.Generator) -> dict[str, MaskedBatch]:
    """The two cases' batches, masked once (both implementations see the same ones)."""
    masker = Masker(MaskingRates(args.mask_rate), MASK_ID, list(SPECIAL_IDS), args.vocab)
    lengths = {"equal": [args.length] * args.batch,
               "variable": torch.randint(args.min_length, args.max_length + 1, (args.batch,),
                                         generator=generator).tolist()}
    cases = {}
    for case, sizes in lengths.items():
        longest = max(sizes)
        ids = torch.randint(FIRST_ORDINARY, args.vocab, (len(sizes), longest),
                            generator=generator)
        mask = (torch.arange(longest)[None] < torch.tensor(sizes)[:, None]).long()
        ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
        ids[:, 0] = 101
        ids[torch.arange(len(sizes)), torch.tensor(sizes) - 1] = 102
        cases[case] = masker(ids, mask, generator)
    return cases


def _ours_step(model, optimizer) -> Callable[[MaskedBatch], float]:
    objective = MaskedLMObjective(model)

    def step(batch: MaskedBatch) -> float:
        optimizer.zero_grad(set_to_none=True)
        result = objective.score(batch)
        loss = result.loss / result.count
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _transformers_step(model, optimizer) -> Callable[[MaskedBatch], float]:
    def step(batch: MaskedBatch) -> float:
        optimizer.zero_grad(set_to_none=True)
        device = batch.input_ids.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        labels = torch.where(batch.selected, batch.labels, torch.full_like(batch.labels, -100))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def run_mlm(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """Measure every (case, implementation); returns the result document.

    Raises:
        InputError: a vocabulary without room for ordinary tokens, or --min-length above
            --max-length.
    """
    if args.vocab <= FIRST_ORDINARY:
        raise InputError(f"--vocab must be more than {FIRST_ORDINARY} (BERT's special tokens "
                         f"take the ids up to {FIRST_ORDINARY - 1}), got {args.vocab}.")
    if args.min_length > args.max_length:
        raise InputError(f"--min-length ({args.min_length}) must not exceed --max-length "
                         f"({args.max_length}).")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = MosaicConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                          num_hidden_layers=args.layers, num_attention_heads=args.heads,
                          intermediate_size=args.intermediate,
                          max_position_embeddings=max(args.max_length, args.length),
                          **CLASSIC_BERT, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          attention_impl="sdpa")
    settings = {k: getattr(args, k) for k in ("hidden", "layers", "heads", "intermediate",
                                               "vocab", "batch", "length", "min_length",
                                               "max_length", "mask_rate", "seed")}
    document = new_document("mlm", argv, environment(device), settings)
    cases = batches(args, torch.Generator().manual_seed(args.seed))
    for case, batch in cases.items():
        batch = batch.to(device)
        real = int(batch.attention_mask.sum())
        for impl in IMPLS:
            row = {"case": case, "impl": impl, "tokens": real,
                   "padded_tokens": batch.input_ids.numel(), "predicted": batch.num_selected}
            try:
                ours = new_masked_lm(config, seed=args.seed).to(device).train()
                model = ours if impl == "ours" else bert_for_masked_lm(ours)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                step = (_ours_step if impl == "ours" else _transformers_step)(model, optimizer)
                row["first_loss"], peak, method = peak_memory(lambda: step(batch), device)
                timing = time_call(lambda: step(batch), device, min_samples=1 if args.quick
                                   else 3, max_time=args.max_row_time)
                row.update(status="ok", seconds=timing.median_s, samples=timing.samples,
                           tokens_per_s=real / timing.median_s, peak_bytes=peak,
                           memory_method=method)
            except Exception as err:  # noqa: BLE001 - every measurement becomes a row
                row.update(status="failed", reason=first_line(err))
            print(f"# {case:8} {impl:18} " + (f"{row['tokens_per_s']:10.0f} tokens/s "
                                              f"{row['peak_bytes'] / 2**20:8.1f} MiB"
                                              if row["status"] == "ok" else row["reason"]),
                  flush=True)
            document["rows"].append(row)
    document["speedup"] = _speedups(document["rows"])
    return document


def _speedups(rows: list[dict]) -> dict[str, float]:
    """Per case, ours' tokens/s over transformers' (when both rows are ok)."""
    speed = {(r["case"], r["impl"]): r.get("tokens_per_s") for r in rows}
    return {case: speed[(case, "ours")] / speed[(case, "transformers-sdpa")]
            for case in ("equal", "variable")
            if speed.get((case, "ours")) and speed.get((case, "transformers-sdpa"))}
