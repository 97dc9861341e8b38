"""2-process gloo: MoCo enqueues the gathered keys once, shuffle-BN permutes across ranks, and
MoCo's key encoder / BYOL's target network stay identical on every rank."""

from __future__ import annotations

import torch

from tests.distributed.helpers import SHUFFLE_BATCH as B


def test_moco_queue_shuffle_bn_and_targets_under_ddp(ddp_results) -> None:
    r0, r1 = (torch.load(ddp_results / f"moco_rank{r}.pt") for r in range(2))

    full = torch.arange(2 * B * 3, dtype=torch.float32).view(2 * B, 3)
    shuffled = torch.cat([r0["shuffled"], r1["shuffled"]])
    assert not torch.equal(shuffled, full)  # rows moved across ranks
    assert torch.equal(shuffled[shuffled[:, 0].argsort()], full)  # ... and it is a permutation
    assert torch.equal(r0["unshuffled"], 2 * full[:B]) and torch.equal(
        r1["unshuffled"], 2 * full[B:]
    )

    m0, m1 = r0["moco"], r1["moco"]
    assert torch.equal(m0["queue"], m1["queue"]) and int(m0["ptr"]) == int(m1["ptr"]) == 2 * B
    gathered = torch.cat([m0["keys"], m1["keys"]])
    assert torch.allclose(m0["queue"][: 2 * B], gathered.to(m0["queue"].dtype))  # rank order
    assert torch.equal(m0["queue"][2 * B :], m0["queue0"][2 * B :])  # enqueued once
    for k in m0["momentum_encoder"]:
        assert torch.equal(m0["momentum_encoder"][k], m1["momentum_encoder"][k]), k
    for k in m0["params"]:
        assert torch.equal(m0["params"][k], m1["params"][k]), k
    for k, v in r0["byol"]["target"].items():
        assert torch.equal(v, r1["byol"]["target"][k]), k
