"""model-repo's activator: link Nix-store Hugging Face models into the hub cache.

Modules, one responsibility each: :mod:`.manifest` (the manifest contract),
:mod:`.cachedir` (where the hub dir is), :mod:`.naming` (variable and folder names),
:mod:`.hubfs` (safe atomic I/O on the hub dir), :mod:`.linking` (the planner),
:mod:`.state` (the profile's own records), :mod:`.activation` (one run end to end),
:mod:`.envout` (environment output), :mod:`.cli` (the command line).
"""

__version__ = "0.1.0"
