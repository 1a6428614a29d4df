"""Stage 3, the engine: decided work through the service, under limits, into the output.

    runner      the job's bookkeeping: every item ends with an outcome, events for the CLI
    chains      the work in the order it may go: dependents released as their parents are made
    item        one item: its request sent, or a paid-for link fetched again, and written
    attempts    one request, attempted until answered, refused, given up on, or stopped
    ending      how an item ends: its journal line and its outcome
    writing     images, sidecar and journal line, in the I/O threads
    stopping    whether the job is stopping, and why; cancelling what is in flight
    room        answers' images held in memory, from reading a body to writing it
    scheduler   bounded fan-out of any async callable (knows nothing of HTTP)
    ratelimit   requests per minute, and the whole job slowed after a 429
    retry       the retry policy handed to tenacity
    guards      the budgets that stop a job: failing service, failed items, money
    links       images answered as links, fetched with their own retry budget

The engine never plans: it gets decided work from ``plan.triage``.
"""
