"""The command line: the words (``arguments``), what each command does (``main``), and what
batchgen says on stderr (``logs``, ``progress``). The library below never prints or exits.
"""
