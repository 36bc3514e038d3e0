"""The driver's side of weight sync over a collective group (rollout.weight_sync = 'collective').

Set up once per set of roles and reused for every sync (and across PPO runs that share a `RolePool`):

    link = CollectiveSync(policy, engines, bucket_mb=64)   # group: rank 0 = policy rank 0, then each engine's workers
    link.sync()                                            # every step: rank 0 broadcasts buckets, engines load them
    link.close()                                           # before the actors go

The driver takes a free port on policy rank 0's node and hands (address, port, ranks, bucket layout) to everyone by
Ray; the weights themselves never enter Ray's object store (umm_ray.actors.weight_sync).
"""

from __future__ import annotations

import ray

from umm_ray.actors.policy import PolicyGroup


class CollectiveSync:
    """A weight-sync group between `policy` rank 0 and `engines` (RolloutActor handles, either backend).

    Args:
        bucket_mb: flat-buffer size in MiB (a larger tensor is sent alone).
        backend: 'gloo' (through CPU memory, any placement) or 'nccl' (every member on a CUDA device).
    """

    def __init__(self, policy: PolicyGroup, engines: list, bucket_mb: float = 64, backend: str = "gloo"):
        if not engines:
            raise ValueError("CollectiveSync: no rollout engines to sync")
        self.policy, self.engines = policy, list(engines)
        self.backend = backend
        self.layout = ray.get([r.sync_layout.remote(int(bucket_mb * 2 ** 20)) for r in policy.ranks])[0]
        counts = ray.get([e.num_sync_ranks.remote() for e in self.engines])
        self.world_size = 1 + sum(counts)
        host, port = ray.get(policy.ranks[0].master_address.remote())
        firsts = [1 + sum(counts[:i]) for i in range(len(counts))]
        # All members at once: each one's group constructor waits for the others.
        ray.get([policy.ranks[0].join_weight_sync.remote(host, port, self.world_size, self.backend)]
                + [e.join_weight_sync.remote(host, port, f, self.world_size, self.backend, self.layout)
                   for e, f in zip(self.engines, firsts)])
        self.address = (host, port)
        self.num_bytes = sum(b.nbytes for b in self.layout)

    def sync(self) -> list:
        """Broadcast the policy's current weights to every engine; returns each engine's `SyncStats`."""
        if self.policy is None:
            raise RuntimeError("CollectiveSync.sync after close()")
        sends = [r.broadcast_weights.remote() for r in self.policy.ranks]
        recvs = [e.receive_weights.remote() for e in self.engines]
        pending = sends + recvs
        while pending:  # the first failure raises at once, not after the others' broadcast times out
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
        return ray.get(recvs)

    def close(self, timeout_s: float = 30.0) -> None:
        """Every member leaves the group. Members whose actor is gone are skipped, and those still stuck in a sync
        that failed (a dead peer) are not waited for beyond `timeout_s`: the roles' shutdown kills them next."""
        if self.policy is None:
            return
        refs = [r.leave_weight_sync.remote() for r in self.policy.ranks] + \
            [e.leave_weight_sync.remote() for e in self.engines]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        for ref in done:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                pass
        self.policy, self.engines = None, []
