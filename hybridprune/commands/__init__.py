"""CLI command groups, one module each, all written one way.

A module defines its commands as plain functions ``<command>_cmd`` whose parameters default to
``typer.Argument``/``typer.Option``, and adds them to the app in ``register(app)``. Option names
come from the parameter names; names are spelled out only for a short alias (``--out``, ``-o``),
another name (``--json``) or an on-only flag (``--compile``). Help texts are sentences; a default
decided at run time reads ``(default: ...)``, never in square brackets, which Rich would take for
markup. Bad input raises a :class:`~hybridprune.errors.HybridPruneError` (``cli.main`` prints
``error: ...`` and exits 2); a run that fails otherwise ends through :func:`hybridprune.cli.fail`.
Heavy imports stay inside the functions, so ``hybridprune --help`` stays fast.
"""

import typer


def trust_model_code_option():
    """The ``--trust-model-code`` flag of every command that loads a checkpoint (a fresh Option each call)."""
    return typer.Option(False, "--trust-model-code",
                        help="Let a checkpoint that names its model as code (file.py:callable) import and run it.")
