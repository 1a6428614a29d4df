"""The built-in simulator: a real HTTP server on 127.0.0.1 that behaves like the relay.

``simulator`` (the server), ``faults`` (which request fails, and how), ``answers`` (the
success in its three shapes), ``links`` (images served as links), ``images`` (the
pictures), ``stats`` (what it was asked), ``settings``. Imported only by the commands that
start it (``batchgen simulator`` and ``--simulate``), so no other command loads aiohttp's
server.
"""
