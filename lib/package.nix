# The `model-repo` command, built from this repository's pyproject.toml with
# nixpkgs' Python tooling: every subcommand (activate, env, status, deactivate,
# schema, and the Hub-facing prefetch, ls and the rest, which import
# huggingface_hub only when they run, so activation stays as fast), with bash,
# zsh and fish completions (completions/, generated from the CLI's parser).
{
  lib,
  python3Packages,
  installShellFiles,
  # Kept so that `callPackage ./lib/package.nix { withHub = …; }` still evaluates;
  # huggingface_hub is always included now.
  withHub ? true,
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
      (root + "/completions")
      (lib.fileset.maybeMissing (root + "/README.md"))
      (lib.fileset.maybeMissing (root + "/LICENSE"))
    ];
  };

  build-system = [ python3Packages.setuptools ];
  nativeBuildInputs = [ installShellFiles ];

  dependencies = with python3Packages; [
    pydantic
    platformdirs
    filelock
    structlog
    huggingface-hub
  ];

  postInstall = ''
    installShellCompletion --cmd model-repo \
      --bash completions/model-repo.bash \
      --zsh completions/_model-repo \
      --fish completions/model-repo.fish
  '';

  pythonImportsCheck = [
    "activate"
    "activate.hub"
  ];

  meta = {
    description = "Links Nix-store Hugging Face models into the hub cache; pins, fetches and lists Hub repos";
    mainProgram = "model-repo";
    license = lib.licenses.mit;
    platforms = lib.platforms.unix;
  };
}
