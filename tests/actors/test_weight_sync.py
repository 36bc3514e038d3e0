"""Bucket layout, packing and the weight-sync group itself (real gloo groups over a real TCPStore, in threads)."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.distributed as dist

from tests.fixtures import free_port
from umm_ray.actors.weight_sync import ReceivePlan, SyncGroup, pack, plan_buckets, received_weights, unpack


def test_buckets_keep_order_split_by_size_and_dtype():
    meta = [("a", (4, 4), torch.float32), ("b", (8,), torch.float32), ("c", (2,), torch.bfloat16),
            ("d", (100,), torch.float32), ("e", (3,), torch.float32)]
    buckets = plan_buckets(meta, bucket_bytes=100)
    assert [[s.name for s in b.slots] for b in buckets] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [b.dtype for b in buckets] == ["float32", "bfloat16", "float32", "float32"]
    assert [(s.offset, s.numel) for s in buckets[0].slots] == [(0, 16), (16, 8)]
    assert buckets[2].nbytes == 400  # larger than the bucket size: sent alone
    assert len(plan_buckets(meta, bucket_bytes=10 ** 9)) == 3  # one per dtype run
    with pytest.raises(ValueError, match="positive"):
        plan_buckets(meta, 0)
    with pytest.raises(ValueError, match="repeated"):
        plan_buckets(meta + [("a", (1,), torch.float32)], 100)


def test_pack_unpack_round_trip_and_shape_check():
    ts = {"w": torch.randn(3, 5), "b": torch.randn(5), "s": torch.randn(())}
    (bucket,) = plan_buckets([(n, tuple(t.shape), t.dtype) for n, t in ts.items()], 10 ** 6)
    flat = pack(bucket, list(ts.values()), torch.device("cpu"))
    assert flat.shape == (21,)
    out = dict(unpack(bucket, flat))
    assert all(torch.equal(out[n], t) for n, t in ts.items())
    assert out["w"].data_ptr() == flat.data_ptr()  # views, not copies
    with pytest.raises(ValueError, match="'b' has shape"):
        pack(bucket, [ts["w"], torch.randn(4), ts["s"]], torch.device("cpu"))


def test_group_broadcasts_buckets_renames_and_ties_without_touching_the_default_group():
    """Three members on one store: rank 0 sends two buckets, ranks 1-2 receive them renamed, an alias dropped and a
    tied alias added; the group is reused for a second send and closes cleanly."""
    weights = {"x": torch.randn(6, 2), "alias": torch.randn(2), "emb": torch.randn(4, 3)}
    buckets = plan_buckets([(n, tuple(t.shape), t.dtype) for n, t in weights.items()], bucket_bytes=60)
    assert len(buckets) == 2
    plan = ReceivePlan(tuple(buckets), {"x": "model.x", "alias": None, "emb": "model.emb"},
                       tied=(("head", "model.emb"),))
    port, got, errors = free_port(), {}, []

    def member(rank: int):
        try:
            group = SyncGroup("127.0.0.1", port, rank, 3, "gloo", timeout_s=60)
            for round_ in range(2):
                if rank == 0:
                    for b in buckets:
                        group.broadcast(pack(b, [weights[s.name] * (round_ + 1) for s in b.slots], group.device))
                else:
                    got[(rank, round_)] = list(received_weights(group, plan))
            group.close()
        except Exception as e:  # noqa: BLE001 - surfaced in the main thread's assertion below
            errors.append(e)

    threads = [threading.Thread(target=member, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(got) == 4
    for (rank, round_), pairs in got.items():
        named = dict(pairs)
        assert [n for n, _ in pairs] == ["model.x", "model.emb", "head"]
        assert torch.equal(named["model.x"], weights["x"] * (round_ + 1))
        assert named["head"] is named["model.emb"]
    assert not dist.is_initialized()


def test_group_rejects_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        SyncGroup("127.0.0.1", 1, 0, 2, "mpi")
    with pytest.raises(ValueError, match="rank 2"):
        SyncGroup("127.0.0.1", 1, 2, 2)
