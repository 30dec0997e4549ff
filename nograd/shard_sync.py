r"""Collective operations among the ``k`` threads of one sharded training step
(:class:`nograd.parallel.ShardedStep`): the few numbers that layers coupling the rows of a batch
(batch norm's statistics) must share between the shards.

A :class:`ShardGroup` has ``k`` participants, numbered ``0 … k-1``, one per thread. Every
participant calls the same collectives in the same order; each call returns when all ``k`` have
made it:

* :meth:`ShardGroup.allreduce` — the elementwise sums of float64 arrays over the participants,
  added in the fixed order ``0, 1, …, k-1`` once, by one thread, and handed to all: every
  participant gets the same bits, and a run is deterministic whatever the threads' timing;
* :meth:`ShardGroup.allgather` — every participant's arrays, in participant order (for combining
  rules other than a sum: :func:`nograd.kernels.batchnorm.combine_stats`);
* :meth:`ShardGroup.finish` — the end of a participant's work: a final rendezvous, which turns a
  participant that called fewer collectives than another into an error instead of a hang.

Mechanism: one :class:`threading.Barrier` whose ``action`` (run by one thread after all arrived
and before any leaves) checks that everyone called the same collective on arrays of the same
shapes, combines the participants' slots into a *new* result object and clears the slots. A slot
is written only before its owner's wait and read only inside the action, and the result is read
by each participant right after its wait returns — before its next collective, without which the
next action cannot run — so one barrier per call is enough (no double buffering).

Errors: a participant that raises calls :meth:`ShardGroup.abort`, which breaks the barrier; the
others then get :class:`threading.BrokenBarrierError` from their current or next collective
instead of waiting forever, and the caller reports the original error (ShardedStep does). A group
serves one step; a broken group stays broken.

>>> import threading
>>> import numpy as np
>>> group = ShardGroup(2)
>>> out = [None, None]
>>> def run(i):
...     out[i] = group.allreduce(i, (np.full(3, i + 1.0),))[0]
>>> threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
>>> for t in threads: t.start()
>>> for t in threads: t.join()
>>> out[0].tolist(), out[0] is out[1]
([3.0, 3.0, 3.0], True)
"""
from __future__ import annotations

import threading

import numpy as np

from .core.checks import check_int

__all__ = ["ShardGroup", "ShardMember"]


class ShardGroup:
    """The collectives of ``size`` participants (threads) of one sharded step; see the module.

    ``timeout`` (seconds, ``None`` for none) bounds each wait; past it the barrier breaks and
    every participant gets :class:`threading.BrokenBarrierError`. ``members[i]`` is participant
    ``i``'s handle (:class:`ShardMember`).
    """

    def __init__(self, size: int, *, timeout: float | None = None):
        self.size = check_int(size, "size", low=1)
        self._slots = [None] * self.size
        self._result = None
        self._barrier = threading.Barrier(self.size, action=self._combine, timeout=timeout)
        self.members = [ShardMember(self, i) for i in range(self.size)]

    def __repr__(self):
        return f"ShardGroup(size={self.size}{', broken' if self.broken else ''})"

    @property
    def broken(self) -> bool:
        """True once a participant aborted (or a wait timed out): every collective then raises."""
        return self._barrier.broken

    def _combine(self):
        slots, self._slots = self._slots, [None] * self.size
        calls = [(kind, tag, tuple(a.shape for a in arrays)) for kind, tag, arrays in slots]
        if any(c != calls[0] for c in calls[1:]):
            seen = "; ".join(f"participant {i}: {k} {t!r} of shapes {s}" for i, (k, t, s) in enumerate(calls))
            raise RuntimeError(f"shard group: the participants called different collectives ({seen}); "
                               f"every shard must run the same layers in the same order")
        kind = calls[0][0]
        if kind == "allreduce":
            totals = []
            for j in range(len(slots[0][2])):
                total = np.array(slots[0][2][j], dtype=np.float64)       # a copy
                for _, _, arrays in slots[1:]:                          # participant order
                    total += arrays[j]
                total.flags.writeable = False
                totals.append(total)
            self._result = tuple(totals)
        elif kind == "allgather":
            self._result = [arrays for _, _, arrays in slots]
        else:
            self._result = None

    def _collect(self, index, kind, tag, arrays):
        index = check_int(index, "index", low=0)
        if index >= self.size:
            raise ValueError(f"index must be below the group's size {self.size}, got {index}")
        if kind == "allreduce":
            arrays = tuple(np.asarray(a, dtype=np.float64) for a in arrays)
        else:
            arrays = tuple(np.asarray(a) for a in arrays)
        self._slots[index] = (kind, str(tag), arrays)
        self._barrier.wait()
        return self._result                  # read before this thread's next collective

    def allreduce(self, index: int, arrays, tag: str = ""):
        """Participant ``index``'s part of a sum: ``arrays`` (a sequence of arrays, converted to
        float64; the same shapes at every participant) → a tuple of their sums over the
        participants, added in participant order. The returned arrays are shared and read-only.
        ``tag`` names the call in the error raised when participants disagree."""
        return self._collect(index, "allreduce", tag, arrays)

    def allgather(self, index: int, arrays, tag: str = ""):
        """Participant ``index``'s part of a gather: a list, in participant order, of every
        participant's tuple of ``arrays`` (shared: do not modify)."""
        return self._collect(index, "allgather", tag, arrays)

    def finish(self, index: int) -> None:
        """Participant ``index`` is done: returns when all are (an error if another participant
        is still waiting in a collective, i.e. the participants' calls did not match)."""
        self._collect(index, "finish", "", ())

    def abort(self) -> None:
        """Break the group: every participant waiting now, or calling later, gets
        :class:`threading.BrokenBarrierError`."""
        self._barrier.abort()


class ShardMember:
    """Participant ``index`` of a :class:`ShardGroup`: its collectives without the index."""

    def __init__(self, group: ShardGroup, index: int):
        self.group, self.index = group, int(index)

    def __repr__(self):
        return f"ShardMember({self.index} of {self.group.size})"

    def allreduce(self, arrays, tag: str = ""):
        """:meth:`ShardGroup.allreduce` as this participant."""
        return self.group.allreduce(self.index, arrays, tag)

    def allgather(self, arrays, tag: str = ""):
        """:meth:`ShardGroup.allgather` as this participant."""
        return self.group.allgather(self.index, arrays, tag)

    def finish(self) -> None:
        """:meth:`ShardGroup.finish` as this participant."""
        self.group.finish(self.index)

    def abort(self) -> None:
        """:meth:`ShardGroup.abort`."""
        self.group.abort()
