"""Regional compilation: each layer's token-wise work compiled, its packed attention eager.

An encoder layer is token-wise work around one step that mixes tokens: before attention the
norm (pre-LN) and the QKV projection and rotation (:meth:`EncoderLayer.before_attention`); then
attention over the packed, unpadded sequences; after it the output projection, residual and
norm and the feed-forward block (:meth:`EncoderLayer.after_attention`). :class:`CompiledRegions`
compiles the two token-wise regions with ``torch.compile(dynamic=True, fullgraph=True)``, one
compiled function per region whatever the layer, as PyTorch's regional-compilation recipe does
for repeated blocks, and runs attention eagerly on the packed tokens, exactly as the eager model
does. The batch's packing, embeddings and padding stay eager too.

Why regions and not the whole model: a whole-model graph needs shapes that follow from the
input's, so it runs the padded rows (:class:`~mosaic_encoder.padding.PaddedRows`) with one dense
score block per row: on a CPU that computes the padding eager skips, loses exact ALiBi
windowing, and inductor's fused masked-ALiBi softmax recomputes its integer index arithmetic in
each of its three passes over the scores (``bench compiled``: 0.1 to 1.0x eager from 512
tokens on).

On the CPU with inductor the regions compile with inductor's ``freezing``: weights become
constants, so each linear layer runs oneDNN on a copy of its weight packed once for it (with the
residual add fused into the output projection) instead of a matrix product on the stored
layout at every call. That is where the speed comes from; the fused element-wise work adds
little. Frozen graphs hold one layer's weights, so they are compiled per layer (the generated
kernels are shared through inductor's cache): the first forward compiles every layer, and
weights changed afterwards are not seen. Elsewhere one graph per region serves every layer.

Only what pays runs compiled. On the CPU, the first forwards at each size (token counts in
``[2^k, 2^(k+1))``) after compilation time each region both ways, compiled on half the layers
and eager on the other half, alternating; a region that does not pay at a size (by
:data:`PAYING_MARGIN`) runs eagerly at that size from then on, and the first such verdict is a
:class:`CompileWarning` (on stderr, once) with the measured ratio. Batches of one token, and
forwards with gradients enabled, run eagerly (freezing is an inference transform).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from .layers import LAYER_RUNNER, Encoder, EncoderLayer, token_blocks
from .padding import Packing, PaddedRows
from .positions import AttentionPositions

CALIBRATION_FORWARDS = 4  # forwards per size timed both ways: each layer twice each way
# A region runs compiled at a size only when its compiled calls took at most 1 / PAYING_MARGIN of
# eager's: timing noise on a shared machine is of that order, and a tie goes to eager (nothing to
# gain, and nothing to risk).
PAYING_MARGIN = 1.05


class CompileWarning(UserWarning):
    """A compiled region measured slower than eager here; it runs eagerly at that size."""


@dataclass
class Trial:
    """The timed calls of one region at one size, while deciding whether compiling it pays."""

    compiled_s: float = 0.0
    eager_s: float = 0.0
    forwards: int = 0
    pays: bool | None = None


class CompiledRegions:
    """``model`` (an encoder, a masked-LM model or anything holding one :class:`Encoder`) with
    its layers' token-wise regions compiled; call it as the model.

    Args:
        model: the model, in eval mode; it is not modified (the regions run only inside calls of
            this object).
        backend: the ``torch.compile`` backend (freezing applies to ``"inductor"`` on the CPU).
    """

    def __init__(self, model: nn.Module, backend: str = "inductor"):
        self.model = model
        layers = next(m for m in model.modules() if isinstance(m, Encoder)).layer
        self.index = {id(layer): i for i, layer in enumerate(layers)}
        cpu = next(model.parameters()).device.type == "cpu"
        self.freeze = cpu and backend == "inductor"
        self.calibrate = cpu  # host clocks time CPU work; CUDA kernels return before they end
        compile_region = partial(torch.compile, dynamic=True, fullgraph=True, backend=backend)
        self.before = compile_region(EncoderLayer.before_attention)
        self.after = compile_region(EncoderLayer.after_attention)
        self.compiled_layers: set[int] = set()
        self.trials: dict[tuple[str, int], Trial] = defaultdict(Trial)
        self.timed: set[tuple[str, int]] = set()  # the trials this forward added to
        self.warned = False

    def __call__(self, *args, **kwargs):
        with self.settings():
            token = LAYER_RUNNER.set(self.run_layer)
            try:
                return self.model(*args, **kwargs)
            finally:
                LAYER_RUNNER.reset(token)
                self.close_trials()

    def settings(self) -> contextlib.AbstractContextManager:
        """Inductor's freezing, and room in dynamo's cache for one frozen graph per layer."""
        if not self.freeze:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch._inductor.config.patch(freezing=True))
        limit = torch._dynamo.config.recompile_limit + len(self.index)
        stack.enter_context(torch._dynamo.config.patch(recompile_limit=limit))
        return stack

    def run_layer(self, layer: EncoderLayer, hidden: torch.Tensor, packing: Packing | PaddedRows,
                  positions: AttentionPositions) -> torch.Tensor:
        """One layer: hidden (T, H) -> (T, H), its regions compiled where that pays."""
        tokens = hidden.shape[0]
        if tokens < 2 or torch.is_grad_enabled():  # a compiled graph would specialise on 1
            return layer(hidden, packing, positions)
        index, size = self.index[id(layer)], tokens.bit_length()
        q, k, v = self.region("before", index, size, partial(self.before, layer),
                              layer.before_attention, hidden, positions)
        attended = layer.attention.self.attend(q, k, v, packing, positions)
        hidden = self.region("after", index, size,
                             partial(token_blocks, partial(self.after, layer)),
                             partial(token_blocks, layer.after_attention), hidden, attended)
        self.compiled_layers.add(index)
        return hidden

    def region(self, name: str, index: int, size: int, compiled: Callable, eager: Callable,
               *args):
        """Run one region of layer ``index`` compiled or eagerly, timing it while its trial at
        ``size`` is open. A layer's first run compiles it, untimed."""
        trial = self.trials[name, size]
        if index not in self.compiled_layers or not self.calibrate or trial.pays:
            return compiled(*args)
        if trial.pays is False:
            return eager(*args)
        use_compiled = (index + trial.forwards) % 2 == 0
        start = time.perf_counter()
        out = (compiled if use_compiled else eager)(*args)
        seconds = time.perf_counter() - start
        if use_compiled:
            trial.compiled_s += seconds
        else:
            trial.eager_s += seconds
        self.timed.add((name, size))
        return out

    def close_trials(self) -> None:
        """After a forward: count it in the trials it timed, and decide those it completes."""
        for name, size in self.timed:
            trial = self.trials[name, size]
            trial.forwards += 1
            if trial.forwards < CALIBRATION_FORWARDS or not (trial.compiled_s and trial.eager_s):
                continue
            trial.pays = trial.compiled_s * PAYING_MARGIN <= trial.eager_s
            if not trial.pays and not self.warned:
                self.warned = True
                warnings.warn(f"torch.compile does not pay here for the layers' work {name} "
                              f"attention at {1 << (size - 1)} to {(1 << size) - 1} tokens: "
                              f"compiled, it ran at {trial.eager_s / trial.compiled_s:.2f}x "
                              f"eager on this machine, so it runs eagerly at that size (other "
                              f"sizes are measured alike, without a message).", CompileWarning)
        self.timed.clear()
