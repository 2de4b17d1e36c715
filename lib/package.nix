# The activator (`model-repo` command), built from this repository's
# pyproject.toml with nixpkgs' Python tooling.
{
  lib,
  python3Packages,
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

  dependencies = with python3Packages; [
    pydantic
    platformdirs
    filelock
    structlog
  ];

  pythonImportsCheck = [ "activate" ];

  meta = {
    description = "Links Nix-store Hugging Face models into the hub cache";
    mainProgram = "model-repo";
    license = lib.licenses.mit;
    platforms = lib.platforms.unix;
  };
}
