"""Stage 3, the engine: decided work through the service, under limits, into the output.

    runner      the job's bookkeeping: every item ends with an outcome, events for the CLI
    chains      the work in the order it may go: dependents released as their parents are made
    item        one item's path, top to bottom: sent with retries (or a paid-for link fetched
                again), its links fetched, written, journaled, ended as an outcome; and the
                ``RunContext`` every item of a run is handed
    arrived     the check of what arrived: an item's flags
    writing     the blocking part of an item's path (references read, images and sidecar
                written), run in the I/O threads
    stopping    whether the job is stopping, and why; cancelling what is in flight
    room        answers' images held in memory, from reading a body to writing it
    scheduler   bounded fan-out of any async callable (knows nothing of HTTP)
    ratelimit   requests per minute, and the whole job slowed after a 429
    retry       the retry policy handed to tenacity
    guards      the budgets that stop a job: failing service, failed items, money

The engine never plans: it gets decided work from ``plan.triage``.
"""
