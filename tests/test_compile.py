"""torch.compile (``training.compile: true``): every variant compiles as one graph, and compiled and eager runs
agree.

Graph capture is checked for all five variants with the ``aot_eager`` backend (Dynamo + AOTAutograd, no C++
code generation: seconds per variant); one variant also goes through the default inductor backend, which
generates and compiles C++ (tens of seconds on a small CPU, hence ``slow``).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import VARIANTS, tiny_batch, tiny_model

from ls.models.meta import MetadataError

pytestmark = pytest.mark.usefixtures("one_thread")


def _loss_and_grads(model, forward, spec, meta):
    model.zero_grad(set_to_none=True)
    logits = forward(spec, meta)
    aux = model.auxiliary_losses()  # outside the compiled graph, as the trainer calls it
    loss = logits.square().mean() + sum(aux.values())
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_compiles_to_one_graph_with_the_eager_outputs_and_gradients(variant):
    torch._dynamo.reset()
    model = tiny_model(variant).train()
    spec, meta = tiny_batch(1)
    # fullgraph=True raises at the first graph break (e.g. a host read of a tensor inside forward)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    got, got_grads = _loss_and_grads(model, compiled, spec, meta)
    want, want_grads = _loss_and_grads(model, model, spec, meta)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_the_metadata_id_check_still_runs_eagerly_but_not_inside_a_compiled_graph():
    model = tiny_model("ast_film_soft").eval()
    spec, meta = tiny_batch(1)
    bad = {**meta, "device": torch.tensor([1, 99])}
    with pytest.raises(MetadataError, match="ids in"):
        model(spec, bad)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled(spec, meta)  # captured as one graph: the check (a host read) is left out of it


@pytest.mark.slow
def test_inductor_compiled_softfilm_matches_eager():
    """The default backend (C++ code generation on CPU); tolerance 1e-5: fused kernels reorder sums."""
    torch._dynamo.reset()
    model = tiny_model("ast_film_soft").eval()
    spec, meta = tiny_batch(1)
    with torch.no_grad():
        want = model(spec, meta)
        got = torch.compile(model, fullgraph=True)(spec, meta)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
