"""The Faust runtime: the app factory, the one stage runner, and every touch of faust-streaming
and aiokafka internals. Nothing outside this package imports faust or a private name of aiokafka
(``tests/unit/test_layers.py``); the releases it was written for are checked on import
(:mod:`app.runtime.versions`).

**The delivery invariant.** A committed input offset never passes an event whose outputs (records
on the next topic, DLQ records, verdicts) and state changes (table changelog records) are not
acknowledged by the broker. Every click that reached ``clicks`` therefore ends with a verdict or a
DLQ record: at least once, never lost. How each module keeps it:

* :mod:`~app.runtime.batches` takes micro-batches from an agent's channel without acking anything,
  and drops events fetched before a rebalance (they are read again from the committed offset);
* :mod:`~app.runtime.runner` hands a batch to the stage's pure logic, appends the outputs to the
  producer's batches (:mod:`~app.runtime.producer`), flushes the state changes
  (:mod:`~app.runtime.tables`) and submits the delivery futures to the stage's acker;
* :mod:`~app.runtime.acks` acks batches strictly in the order they were taken, once all their
  deliveries are done; a failed delivery or a crashed stage stops the worker (it resumes from the
  last commit) instead of letting Faust restart the agent over an unacked gap;
* :mod:`~app.runtime.rebalance` commits everything acked before partitions are handed over, and
  records only acks of processed messages (Faust also acks what it skips);
* :mod:`~app.runtime.drain` delivers fetched messages without four tasks each, and seeks back
  instead of letting Faust commit past a hole in a partition.

A worker killed with SIGKILL re-reads from its last commit: duplicates are possible, loss is not.
"""

from app.runtime.versions import check_versions

__all__ = ["READY_MARK", "check_versions"]

#: What Faust logs once a worker has its partitions and runs (process launchers wait for it).
READY_MARK = "[^Worker]: Ready"

check_versions()
