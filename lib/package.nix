# The activator (`model-repo` command), built from this repository's
# pyproject.toml with nixpkgs' Python tooling. `withHub = true` adds
# huggingface_hub for `model-repo prefetch` / `model-repo ls` (the `hub` extra);
# the activator itself never imports it.
{
  lib,
  python3Packages,
  withHub ? false,
}:

let
  root = ../.;
  pyproject = builtins.fromTOML (builtins.readFile (root + "/pyproject.toml"));
  version = pyproject.project.version or "0.0.0";
in
python3Packages.buildPythonApplication {
  pname = "model-repo";
  inherit version;
  pyproject = true;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/pyproject.toml")
      (root + "/activate")
      (lib.fileset.maybeMissing (root + "/README.md"))
      (lib.fileset.maybeMissing (root + "/LICENSE"))
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies =
    with python3Packages;
    [
      pydantic
      platformdirs
      filelock
      structlog
    ]
    ++ lib.optional withHub huggingface-hub;

  pythonImportsCheck = [ "activate" ];

  meta = {
    description = "Links Nix-store Hugging Face models into the hub cache";
    mainProgram = "model-repo";
    license = lib.licenses.mit;
    platforms = lib.platforms.unix;
  };
}
