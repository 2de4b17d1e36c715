"""The Hub-facing side of model-repo: everything that talks to the Hugging Face Hub.

``prefetch`` and ``ls`` (pinning a repo for Nix), ``lock`` and ``update`` (a lock file
pinned per file: :mod:`.pin`, :mod:`.lockfile`, :mod:`.update`), and the modules that
grow around them (repo arguments, Hub access, persistence). huggingface_hub is imported only when one of
these commands runs.

The activation path (``activate.cli`` activate/env/status/deactivate,
``activate.activation``, ``linking``, ``state``, ``hubfs``, ``noop``, ``envout``,
``cachedir``, ``naming``, ``manifest``) never imports this package; the only link is the
lazy parser registration in ``activate.cli._parser`` (:func:`activate.hub.cli.add_parsers`,
argparse only). ``tests/test_hub_structure.py`` checks it.
"""
