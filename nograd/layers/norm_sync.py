r"""Batch statistics shared between the shards of a sharded training step: the part of
:class:`~nograd.layers.BatchNorm1d` (and so ``BatchNorm2d``) that runs when the thread belongs to a
:class:`nograd.parallel.ShardedStep` (:func:`current_shard`).

The shards exchange their per-channel statistics in the forward and the two per-channel sums of the
backward through a :class:`nograd.shard_sync.ShardGroup`, so that the sharded step normalises with
the whole batch's statistics, as ``torch.nn.SyncBatchNorm`` does (derivations in the methods).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from ..core.checks import check_array, check_like

_SHARD = threading.local()


def current_shard():
    """This thread's participant in a sharded training step (a
    :class:`nograd.shard_sync.ShardMember`, set by :class:`nograd.parallel.ShardedStep` around
    its shard's forward and backward), or None: the batch norms then synchronise their training
    statistics with the other shards'. Without one every layer runs as it always did."""
    return getattr(_SHARD, "member", None)


@contextlib.contextmanager
def shard_scope(member):
    """Make ``member`` this thread's :func:`current_shard` inside the block (restored after)."""
    previous = current_shard()
    _SHARD.member = member
    try:
        yield
    finally:
        _SHARD.member = previous


class SyncBatchStats:
    """BatchNorm1d's synchronised training forward and backward (a mixin; see the module)."""

    @staticmethod
    def _no_sync_jvp(train):
        if train and current_shard() is not None:
            raise RuntimeError("jvp through synchronised batch statistics (training, inside a sharded step) "
                               "is not implemented")

    def _sync_forward(self, x, p, relu, member):
        r"""Training forward of this shard's part ``x (n_i, C, ...)`` of a sharded step's batch with
        the whole batch's statistics (then ``max(·, 0)`` if ``relu``); cache :class:`_SyncCache`.

        Each shard's per-channel count, mean and :math:`M_2 = Σ(x - \bar x_i)^2` (shifted float64
        sums) are all-gathered (``3 × C`` numbers) and combined in shard order by Chan, Golub &
        LeVeque's pairwise update (:func:`~nograd.kernels.batchnorm.combine_stats`), the same bits
        in every shard: centred sums need no common shift (which would cost a second exchange) and
        keep a large mean out of the squares. Shard 0 alone moves the running averages, with the
        global statistics and count, as the unsharded step does."""
        from ..kernels import batchnorm as kb  # lazy: keep `import nograd` light

        n, mean, m2 = kb.batchnorm_partial_stats(x)
        if not (np.isfinite(mean).all() and np.isfinite(m2).all()):
            check_array(x, "x")           # NaN or inf: raises before the exchange (the others then stop)
        parts = member.allgather((np.array([n]), mean, m2), tag=f"{type(self).__name__} statistics")
        total, gmean, gvar = kb.combine_stats([int(q[0][0]) for q in parts], [q[1] for q in parts],
                                              [q[2] for q in parts])
        if total < 2:
            raise ValueError(f"{type(self).__name__} needs more than one value per channel in "
                             f"training, got a batch of {total} per channel")
        gamma, beta = (p["weight"], p.get("bias")) if self.affine else (None, None)
        y, stats = kb.batchnorm_normalize(x, gmean, gvar, gamma, beta, self.eps, relu)
        if member.index == 0:
            self._update_running(stats[0], stats[1].astype(x.dtype), total)
        return y, _SyncCache((x, stats, bool(relu), total, member))

    def _sync_backward(self, cache, dy, p, need_dx):
        r"""Backward of :meth:`_sync_forward`. The cotangent ``dy`` ShardedStep passes down is the
        batch's, split by rows (the :math:`w_i = n_i/N` scaling makes it so; derivation in
        :mod:`nograd.parallel`), so the batch's :math:`\bar x = γ r(\bar y - \frac1M Σ\bar y -
        \hat x \frac1M Σ\bar y \hat x)` needs the two sums over all :math:`M` values of a
        channel: one all-reduce of the shards' parts, in shard order. :math:`\bar γ, \bar β` are
        each shard's own part, unscaled; ShardedStep's sum of the shards' gradients is the
        batch's. ``need_dx=False``: no exchange."""
        from ..kernels import batchnorm as kb

        x, stats, relu, total, member = cache
        check_like(dy, x.shape)
        if current_shard() is not member:
            raise RuntimeError("backward of a batch norm's synchronised forward outside the shard "
                               "group that ran it (ShardedStep runs both inside one step)")
        sdy, sdyx = kb.batchnorm_backward_sums(x, dy, stats, relu)
        grads = self._grads_from_sums(p, sdyx * stats[2].astype(np.float64), sdy)
        if not need_dx:
            return None, grads
        tdy, tdyx = member.allreduce((sdy, sdyx), tag=f"{type(self).__name__} cotangent sums")
        gamma = p["weight"] if self.affine else None
        return kb.batchnorm_input_cotangent(x, dy, stats, gamma, tdy, tdyx, total, relu), grads


class _SyncCache(tuple):
    """Cache of :meth:`BatchNorm1d._sync_forward`: ``(x, stats, relu, total, member)``, ``stats``
    the batch's as :func:`nograd.kernels.batchnorm.batchnorm_forward` gives them."""
