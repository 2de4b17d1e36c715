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
      # For the check phase: the tests and the schema one of them compares.
      (root + "/tests")
      (root + "/schemas")
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

  # No pythonRelaxDeps: pyproject.toml's floors (README, "Supported dependency versions")
  # are at or below what nixpkgs 25.05, 25.11 and unstable ship, so the runtime-deps check
  # passes unrelaxed; relaxing a bound here would hide a version the code does not support.

  # The tests that need neither Nix nor network nor root, run against the installed
  # package, so a user's build catches a dependency of theirs that breaks the activator
  # (the tests that need nix-store skip themselves in the sandbox, saying so).
  doCheck = true;
  nativeCheckInputs = with python3Packages; [
    pytestCheckHook
    hypothesis
    jsonschema
    python-dotenv
  ];
  enabledTestPaths = [
    "tests/test_deps.py"
    "tests/test_activate_manifest.py"
    "tests/test_activate_envout.py"
    "tests/test_activate_cli.py"
    "tests/test_hub_args.py"
  ];
  disabledTests = [
    # Compares pyproject.toml with CI's .ci/oldest-constraints.txt, not in the source.
    "test_oldest_constraints_pin_exactly_the_declared_floors"
  ];

  postInstall = ''
    installShellCompletion --cmd model-repo \
      --bash completions/model-repo.bash \
      --zsh completions/_model-repo \
      --fish completions/model-repo.fish
  '';

  # Every entry point's modules, and huggingface_hub itself: the hub side imports it
  # only when a Hub command runs, so importing activate.hub.* alone would not.
  pythonImportsCheck = [
    "activate"
    "activate.cli"
    "activate.activation"
    "activate.noop"
    "activate.hub"
    "activate.hub.cli"
    "activate.hub.commands"
    "activate.hub.prefetch"
    "activate.hub.pin"
    "activate.hub.lockfile"
    "activate.hub.update"
    "activate.hub.persistcli"
    "huggingface_hub"
  ];

  meta = {
    description = "Links Nix-store Hugging Face models into the hub cache; pins, fetches and lists Hub repos";
    mainProgram = "model-repo";
    license = lib.licenses.mit;
    platforms = lib.platforms.unix;
  };
}
