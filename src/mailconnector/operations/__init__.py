"""Operations: source → [transformation] → target, with the commit/ack protocol end to end.

A source item is acknowledged (for Read Email: marked read / moved / deleted) only once the target has
taken every record the transformation made of it; an item the transformation drops (``None``, ``[]``) is
acknowledged at once. A failed record is written to the operation log and leaves its source item
unacknowledged, so the next run retries exactly it; so does an ``uncertain`` one (it may have been sent:
the next run reports it again until the ledger is resolved). A record the target already had (``skipped``:
sent by an earlier run) acknowledges its item. Each run writes one operation log entry, with the written,
skipped, uncertain and failed records counted apart.

Watch mode repeats the run, waiting with IMAP IDLE where offered (else polling), reconnecting with backoff
after a dropped connection; one consumer per connection + folder at a time (a lease in the store).

The parts: ``_transform`` (a mapping or a callable as ``record -> [records]``), ``_engine`` (one run, or
one chunk of a distributed run), ``_watch`` (the loop that keeps an operation running).
"""

from __future__ import annotations

from ._engine import MAX_CHAIN_DEPTH, RunResult, run_chunk, run_operation
from ._transform import build_transformation
from ._watch import watch_operation

__all__ = ["MAX_CHAIN_DEPTH", "RunResult", "build_transformation", "run_chunk", "run_operation", "watch_operation"]
