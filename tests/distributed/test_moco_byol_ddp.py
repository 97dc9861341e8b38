"""2-process gloo: MoCo enqueues the gathered keys once, shuffle-BN permutes across ranks, and
MoCo's key encoder / BYOL's target network stay identical on every rank."""

from __future__ import annotations

import torch
import torch.distributed as dist

from cld_lightning.methods.byol import BYOL
from cld_lightning.methods.moco import MoCo
from cld_lightning.modules.shuffle_bn import batch_shuffle, batch_unshuffle
from tests.distributed.helpers import MLPBackbone

B = 4


def _views(rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)  # each rank holds different images
    return [torch.rand(B, 3, 8, 8, generator=g) for _ in range(2)]


def _train_step(model, rank: int, world: int):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    batch = (_views(rank), torch.zeros(B, dtype=torch.long), torch.arange(B) + rank * B)
    losses, pending = model.compute_loss(batch, 0)
    losses["loss"].backward()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world
    opt.step()
    model.update_state(pending)
    return pending


def _worker(rank: int, world: int, out: str) -> None:
    res: dict = {}
    # shuffle-BN helpers
    torch.manual_seed(rank)
    x = torch.arange(2 * B * 3, dtype=torch.float32).view(2 * B, 3)[rank * B : (rank + 1) * B]
    xs, unshuffle = batch_shuffle(x)
    res["shuffled"], res["unshuffled"] = xs, batch_unshuffle(xs * 2, unshuffle)
    # MoCo
    torch.manual_seed(0)
    moco = MoCo(
        MLPBackbone(),
        queue_size=24,
        num_crops=2,
        embed_dim=8,
        warmup_epochs=0,
        cld={"num_clusters": 2, "out_dim": 8},
    )
    queue0 = moco.queue.queue.clone()
    keys = _train_step(moco, rank, world)
    res["moco"] = {
        "queue0": queue0,
        "queue": moco.queue.queue.clone(),
        "ptr": moco.queue.ptr.clone(),
        "keys": keys.clone() if torch.is_tensor(keys) else keys,
        "key_encoder": {k: v.clone() for k, v in moco.key_encoder.named_parameters()},
        "params": {k: v.detach().clone() for k, v in moco.named_parameters()},
    }
    # BYOL (BatchNorm running statistics are synchronised by DDP's broadcast_buffers, not here)
    torch.manual_seed(0)
    byol = BYOL(
        MLPBackbone(),
        embed_dim=8,
        projector_hidden_dim=16,
        predictor_hidden_dim=16,
        warmup_epochs=0,
        cld={"num_clusters": 2, "out_dim": 8},
        target_cosine=False,
    )
    _train_step(byol, rank, world)
    res["byol"] = {"target": {k: v.clone() for k, v in byol.target.named_parameters()}}
    torch.save(res, f"{out}/moco_rank{rank}.pt")


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
    keys = m0["keys"] if torch.is_tensor(m0["keys"]) else m0["keys"][0]
    keys1 = m1["keys"] if torch.is_tensor(m1["keys"]) else m1["keys"][0]
    gathered = torch.cat([keys, keys1])
    assert torch.allclose(m0["queue"][: 2 * B], gathered.to(m0["queue"].dtype))  # rank order
    assert torch.equal(m0["queue"][2 * B :], m0["queue0"][2 * B :])  # enqueued once
    for k in m0["key_encoder"]:
        assert torch.equal(m0["key_encoder"][k], m1["key_encoder"][k]), k
    for k in m0["params"]:
        assert torch.equal(m0["params"][k], m1["params"][k]), k
    for k, v in r0["byol"]["target"].items():
        assert torch.equal(v, r1["byol"]["target"][k]), k
