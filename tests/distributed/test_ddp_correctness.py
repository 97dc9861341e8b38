"""2-process gloo vs one process on the concatenated batch: CLD scopes, gradients, memory bank.

Gradient averaging is done exactly as DDP does it (all-reduce SUM / world size), in float64.
"""

from __future__ import annotations

import torch

from tests.distributed.helpers import DDP_BATCH as B
from tests.distributed.helpers import ddp_batch, ddp_npid, grads_of, loss_step


def _single(scope: str, lo: int, hi: int):
    model = ddp_npid(scope)
    losses, pending = loss_step(model, ddp_batch(lo, hi))
    return model, losses, pending


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = 1e-6) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_ddp_matches_single_process(ddp_results) -> None:
    ranks = [torch.load(ddp_results / f"rank{r}.pt") for r in range(2)]

    # global scope: CLD on the gathered batch == CLD of one process on the concatenated batch
    ref, _, ref_pending = _single("global", 0, 2 * B)
    ref_cld = ref.last_cld_output.loss.detach()
    ref_grads = grads_of(ref)
    for r in ranks:
        assert abs(float(r["global"]["cld"] - ref_cld)) < 1e-6
        assert _close(r["global"]["grads"], ref_grads) < 1e-6
    assert "group_head.weight" in ref_grads and ref_grads["group_head.weight"].abs().sum() > 0

    # local scope: each rank's CLD loss == single-process loss on its own half, gradients ==
    # the average of the per-half single-process gradients
    halves = [_single("local", r * B, (r + 1) * B) for r in range(2)]
    for rank, (m, _, _) in enumerate(halves):
        assert abs(float(ranks[rank]["local"]["cld"] - m.last_cld_output.loss.detach())) < 1e-6
    mean_grads = {
        k: 0.5 * (v + grads_of(halves[1][0])[k]) for k, v in grads_of(halves[0][0]).items()
    }
    for r in ranks:
        assert _close(r["local"]["grads"], mean_grads) < 1e-6
    # the two scopes are different objectives (this test could tell them apart)
    local_mean = 0.5 * sum(float(r["local"]["cld"]) for r in ranks)
    assert abs(local_mean - float(ref_cld)) > 1e-4
    assert _close(ranks[0]["local"]["grads"], ref_grads) > 1e-6

    # memory bank: identical on both ranks, equal to one process updating with the whole batch
    ref.update_state(ref_pending)
    for scope in ("global", "local"):
        assert torch.equal(ranks[0][scope]["bank"], ranks[1][scope]["bank"])
        assert float((ranks[0][scope]["bank"] - ref.memory.bank).abs().max()) < 1e-6
    untouched = ddp_npid("global").memory.bank
    changed = (ref.memory.bank - untouched).abs().sum(1) > 0
    assert changed.nonzero().flatten().tolist() == list(range(3, 3 + 2 * B))
