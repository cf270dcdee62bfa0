"""The ``convkit`` command line; its entry point is `convkit.cli.main.main`.

``cli.main`` imports the verb modules (``train_cmds``, ``explain_cmds``, ``kernel_cmds``, ``report_cmds``), which
import only ``cli.common``; this package imports none of them, so each can be imported alone.
"""
