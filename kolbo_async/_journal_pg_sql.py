"""The shared journal's tables in PostgreSQL, and every statement run on them.

One row per item and batch, as in the SQLite journal (key, state, generation id, POST answer,
final status, error; JSON as text), plus who holds it: ``owner`` (a worker's name),
``lease_until`` (the database's clock: machines' clocks never meet) and ``claim`` (the token
of the claim that took it, so a claim whose commit was acknowledged on a dropped connection is
found again). A row whose outcome its owner handed to a caller has ``lease_until`` NULL: it is
nobody's to take over. ``kolbo_journal_batches`` keeps each batch's list (count and digest of
its keys), so a worker with other requests is refused before it sends anything.

Plain strings and one pure function; `_journal_pg` runs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ._journal_keys import ItemKey

__all__ = ["CLAIM", "FIND_CLAIM", "FIND_TAKEN", "LOCK", "REGISTER", "SCHEMA", "digest"]

#: Taken (transaction-scoped) while creating the tables, so workers starting together do not
#: race on ``CREATE TABLE IF NOT EXISTS``: "KOLB".
LOCK = "SELECT pg_advisory_xact_lock(1263488066)"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS kolbo_journal_batches (
        batch_id text PRIMARY KEY,
        items integer NOT NULL,
        digest text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS kolbo_journal_items (
        batch_id text NOT NULL REFERENCES kolbo_journal_batches ON DELETE CASCADE,
        request_hash text NOT NULL,
        occurrence integer NOT NULL,
        idx integer NOT NULL,
        path text NOT NULL,
        body text NOT NULL,
        state text NOT NULL,
        generation_id text,
        submission text,
        status text,
        error text,
        owner text,
        lease_until timestamptz,
        claim text,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (batch_id, request_hash, occurrence)
    )""",
    """CREATE INDEX IF NOT EXISTS kolbo_journal_items_fresh
        ON kolbo_journal_items (batch_id, idx) WHERE state = 'new' AND owner IS NULL""",
]

#: -> the batch id when this worker registered the batch (it then adds the items).
REGISTER = """INSERT INTO kolbo_journal_batches (batch_id, items, digest) VALUES (%s, %s, %s)
    ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id"""
KNOWN = "SELECT items, digest FROM kolbo_journal_batches WHERE batch_id = %s"
COPY_ITEMS = """COPY kolbo_journal_items (batch_id, request_hash, occurrence, idx, path, body,
    state) FROM STDIN"""

_KEY = "batch_id = %(batch)s AND request_hash = %(hash)s AND occurrence = %(occ)s"
_LEASE = "now() + make_interval(secs => %(lease)s)"

#: The next item nobody has claimed, in list order: ours, in one statement. It is 'claimed'
#: (not yet about to be sent: it may wait a minute for its place in the generation window),
#: so a worker lost meanwhile leaves it to be sent by another, not reported outcome-unknown.
CLAIM = f"""UPDATE kolbo_journal_items SET state = 'claimed', owner = %(me)s,
        lease_until = {_LEASE}, claim = %(claim)s, generation_id = NULL, submission = NULL,
        status = NULL, error = NULL, updated_at = now()
    WHERE (batch_id, request_hash, occurrence) = (
        SELECT batch_id, request_hash, occurrence FROM kolbo_journal_items
        WHERE batch_id = %(batch)s AND state = 'new' AND owner IS NULL
        ORDER BY idx LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING request_hash, occurrence"""
#: A claim of ours (by its token) whose acknowledgement was lost with the connection.
FIND_CLAIM = """SELECT request_hash, occurrence FROM kolbo_journal_items
    WHERE batch_id = %(batch)s AND owner = %(me)s AND claim = %(claim)s"""

#: Rows a worker let go of when it stopped, and rows of other workers whose lease ran out,
#: locked for this transaction. A lease counts only once the server has been up for a whole
#: lease: after a restart every live worker first gets the time to renew the leases that ran
#: out while the server was down.
TAKE = """SELECT request_hash, occurrence, state, generation_id, submission, status, error,
        owner FROM kolbo_journal_items
    WHERE batch_id = %(batch)s AND owner IS DISTINCT FROM %(me)s
        AND ((owner IS NULL AND state <> 'new')
             OR (lease_until < now()
                 AND pg_postmaster_start_time() < now() - make_interval(secs => %(lease)s)))
    ORDER BY idx LIMIT 100 FOR UPDATE SKIP LOCKED"""
#: Taken over: ours now (an intent nobody will answer gets `error`, and so ends).
TAKEN = f"""UPDATE kolbo_journal_items SET owner = %(me)s, lease_until = {_LEASE},
        claim = %(claim)s, error = COALESCE(%(error)s, error), updated_at = now()
    WHERE {_KEY}"""
#: Taken over to be sent again (refused with a 4xx, or resubmit_unknown): anyone's to claim.
REOPEN = f"""UPDATE kolbo_journal_items SET state = 'new', owner = NULL, lease_until = NULL,
        claim = NULL, updated_at = now() WHERE {_KEY}"""
#: What a lost takeover acknowledgement had taken (by its token).
FIND_TAKEN = """SELECT request_hash, occurrence, state, generation_id, submission, status,
        error, owner FROM kolbo_journal_items
    WHERE batch_id = %(batch)s AND owner = %(me)s AND claim = %(claim)s"""

#: fresh (nobody's yet), open (not handed out, not ours), seconds until another worker's
#: lease runs out, seconds the server has been up.
COUNTS = """SELECT
        count(*) FILTER (WHERE state = 'new' AND owner IS NULL),
        count(*) FILTER (WHERE (lease_until IS NOT NULL OR owner IS NULL)
                         AND owner IS DISTINCT FROM %(me)s),
        extract(epoch FROM min(lease_until) FILTER (WHERE owner <> %(me)s) - now()),
        extract(epoch FROM now() - pg_postmaster_start_time())
    FROM kolbo_journal_items WHERE batch_id = %(batch)s"""

#: The outcomes of these keys went to a caller: nobody's to take over any more.
HANDED = """UPDATE kolbo_journal_items SET lease_until = NULL
    WHERE batch_id = %(batch)s AND owner = %(me)s
        AND (request_hash, occurrence) IN (SELECT * FROM unnest(%(hashes)s::text[],
                                                                 %(occs)s::integer[]))"""
#: Renew every lease of ours (not those handed out).
RENEW = f"""UPDATE kolbo_journal_items SET lease_until = {_LEASE}
    WHERE batch_id = %(batch)s AND owner = %(me)s AND lease_until IS NOT NULL"""
#: Let go of what we hold and did not hand out: others (or a later worker) take it at once.
RELEASE = """UPDATE kolbo_journal_items SET owner = NULL, lease_until = NULL, claim = NULL
    WHERE batch_id = %(batch)s AND owner = %(me)s AND lease_until IS NOT NULL"""

UNSENT = f"""UPDATE kolbo_journal_items SET state = 'new', owner = NULL, lease_until = NULL,
        claim = NULL, error = NULL, updated_at = now()
    WHERE {_KEY} AND owner = %(me)s AND state IN ('intent', 'claimed')"""
#: About to be POSTed, if the item is still ours (not taken over while it waited).
INTENT = f"""UPDATE kolbo_journal_items SET state = 'intent', updated_at = now()
    WHERE {_KEY} AND owner = %(me)s AND state = 'claimed'"""
#: The writes of an item's owner: a worker whose lease ran out while it was paused (a frozen VM,
#: SIGSTOP) writes nothing over the worker that took the item over.
SUBMITTED = f"""UPDATE kolbo_journal_items SET state = 'submitted',
        generation_id = %(id)s, submission = %(submission)s, error = NULL, updated_at = now()
    WHERE {_KEY} AND owner = %(me)s"""
UNKNOWN = f"""UPDATE kolbo_journal_items SET state = 'intent', error = %(error)s,
        updated_at = now() WHERE {_KEY} AND owner = %(me)s"""
REJECTED = f"""UPDATE kolbo_journal_items SET state = 'rejected', error = %(error)s,
        updated_at = now() WHERE {_KEY} AND owner = %(me)s"""
FINISHED = f"""UPDATE kolbo_journal_items SET state = 'finished',
        generation_id = COALESCE(%(id)s, generation_id), status = %(status)s, error = NULL,
        updated_at = now() WHERE {_KEY} AND owner = %(me)s"""


#: Whether this worker still owns the item (not taken over meanwhile).
HOLDS = f"SELECT 1 FROM kolbo_journal_items WHERE {_KEY} AND owner = %(me)s"


def digest(keys: Sequence[ItemKey]) -> str:
    """One hash of a batch's list, whatever its order (reordered lists are the same batch)."""
    text = "\n".join(f"{h}:{o}" for h, o in sorted(keys))
    return hashlib.sha256(text.encode()).hexdigest()
