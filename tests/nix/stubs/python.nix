# A stand-in for nixpkgs' python3Packages: enough to evaluate lib/package.nix without
# nixpkgs, and doing what nixpkgs' buildPythonApplication does with its arguments
# (pkgs/development/interpreters/python/mk-python-derivation.nix, read for this stub):
#
#   - `pyproject = true` means format "pyproject", `false` "other"; setting both
#     `pyproject` and `format` is an assertion failure, setting neither throws;
#   - `build-system` goes into nativeBuildInputs after the hooks the format adds
#     (pypaBuildHook, pythonRuntimeDepsCheckHook, pypaInstallHook for pyproject;
#     pythonImportsCheckHook always; pythonRelaxDepsHook only when `pythonRelaxDeps`
#     or `pythonRemoveDeps` is non-empty);
#   - `dependencies` go into propagatedBuildInputs, followed by python itself; a Python
#     module built for another interpreter there throws "Python version mismatch";
#   - the check runs as the install check: doCheck (default false, as there) becomes
#     doInstallCheck, doCheck is false, nativeCheckInputs become nativeInstallCheckInputs;
#   - disabled, checkPhase, checkInputs, nativeCheckInputs, doCheck, doInstallCheck,
#     pyproject, format, stdenv, dependencies, optional-dependencies and build-system are
#     not passed on; every other argument (pytest's enabledTestPaths, disabledTests,
#     pythonImportsCheck, postInstall, meta ...) is, as mkDerivation keeps it;
#   - outputs gain "dist" for the pyproject, setuptools and wheel formats;
#   - a function of finalAttrs is accepted in place of the attribute set;
#   - a non-empty `pytestFlagsArray` is an error (nixpkgs banned it in 2026, NixOS/nixpkgs
#     PR 513772: use `pytestFlags` or `enabledTestPaths`, known since 25.05).
# The result is a derivation-shaped attribute set with a fake out path (nothing is built).
{
  lib,
  # The interpreter the packages were built for; `otherPython` stands for another one.
  pythonVersion ? "3.12",
  # { name = version; } of the stub packages (defaults below).
  versions ? { },
}:

let
  fakeStorePath =
    name:
    "${builtins.storeDir}/${
      builtins.replaceStrings [ "e" "o" "t" "u" ] [ "0" "1" "2" "3" ] (
        builtins.substring 0 32 (builtins.hashString "sha256" name)
      )
    }-${name}";

  mkPython = v: {
    type = "derivation";
    name = "python3-${v}";
    outPath = fakeStorePath "python3-${v}";
    pythonVersion = v;
  };
  python = mkPython pythonVersion;
  otherPython = mkPython "2.7";

  hook = name: {
    type = "derivation";
    inherit name;
    outPath = fakeStorePath name;
  };

  module =
    py: pname: version:
    {
      type = "derivation";
      inherit pname version;
      name = "python${py.pythonVersion}-${pname}-${version}";
      outPath = fakeStorePath "python${py.pythonVersion}-${pname}-${version}";
      pythonModule = py;
    };

  defaultVersions = {
    setuptools = "80.9.0";
    pydantic = "2.11.7";
    platformdirs = "4.3.8";
    filelock = "3.18.0";
    structlog = "25.4.0";
    huggingface-hub = "0.35.0";
    hypothesis = "6.131.0";
    jsonschema = "4.23.0";
    python-dotenv = "1.1.0";
    pytest = "8.3.5";
  };
  packages = lib.mapAttrs (module python) (defaultVersions // versions);

  isPythonModule = drv: drv ? pythonModule && !builtins.isBool drv.pythonModule;
  checkDrv =
    myName: attrName: drv:
    if isPythonModule drv && drv.pythonModule != python then
      throw ''
        Python version mismatch in '${myName}':

        The Python derivation '${myName}' depends on a Python derivation named
        '${drv.name}' in ${attrName}, but the two derivations use different versions of Python''
    else
      drv;

  cleanAttrs = lib.flip builtins.removeAttrs [
    "disabled"
    "checkPhase"
    "checkInputs"
    "nativeCheckInputs"
    "doCheck"
    "doInstallCheck"
    "pyproject"
    "format"
    "stdenv"
    "dependencies"
    "optional-dependencies"
    "build-system"
  ];

  buildPythonApplication =
    argsOrFn:
    let
      attrs = if builtins.isFunction argsOrFn then argsOrFn final else argsOrFn;
      name = attrs.name or "${attrs.pname}-${attrs.version}";
      pyproject = attrs.pyproject or null;
      format = attrs.format or null;
      format' =
        assert (pyproject != null) -> (format == null);
        if pyproject != null then
          (if pyproject then "pyproject" else "other")
        else if format != null then
          format
        else
          throw "${name} does not configure a `format`. To build with setuptools as before, set `pyproject = true` and `build-system = [ setuptools ]`.`";
      withDistOutput = builtins.elem format' [
        "pyproject"
        "setuptools"
        "wheel"
      ];
      relax = attrs.pythonRelaxDeps or [ ] != [ ] || attrs.pythonRemoveDeps or [ ] != [ ];
      doCheck = attrs.doCheck or false;
      propagated = map (checkDrv name "propagatedBuildInputs") (
        attrs.propagatedBuildInputs or [ ] ++ attrs.dependencies or [ ] ++ [ python ]
      );
      # As with a real derivation, its paths exist only once its arguments are valid.
      valid =
        if attrs.pytestFlagsArray or [ ] != [ ] then
          throw "${name}: `pytestFlagsArray` is no longer supported: use `pytestFlags` or `enabledTestPaths`"
        else
          builtins.seq format' (lib.foldl' (ok: d: builtins.seq d ok) true propagated);
      final =
        if attrs.disabled or false then
          throw "${name} not supported for interpreter python${pythonVersion}"
        else
          cleanAttrs attrs
          // {
            type = "derivation";
            inherit name;
            outPath = builtins.seq valid (fakeStorePath name);
            drvPath = builtins.seq valid (fakeStorePath "${name}.drv");
            nativeBuildInputs = [
              python
              (hook "wrap-python-hook")
              (hook "ensure-newer-sources-for-zip-files-hook")
              (hook "python-remove-tests-dir-hook")
              (hook "python-catch-conflicts-hook")
            ]
            ++ lib.optional relax (hook "python-relax-deps-hook")
            ++ [ (hook "python-remove-bin-bytecode-hook") ]
            ++ lib.optional (format' == "setuptools") (hook "setuptools-build-hook")
            ++ lib.optionals (format' == "pyproject") [
              (hook "pypa-build-hook")
              (hook "python-runtime-deps-check-hook")
            ]
            ++ lib.optional (format' != "other") (hook "pypa-install-hook")
            ++ [
              (hook "python-imports-check-hook")
              (hook "python-namespaces-hook")
            ]
            ++ lib.optional withDistOutput (hook "python-output-dist-hook")
            ++ attrs.nativeBuildInputs or [ ]
            ++ attrs.build-system or [ ];
            buildInputs = map (checkDrv name "buildInputs") (attrs.buildInputs or [ ]);
            propagatedBuildInputs = propagated;
            doCheck = false;
            doInstallCheck = doCheck;
            nativeInstallCheckInputs = attrs.nativeCheckInputs or [ ] ++ attrs.nativeInstallCheckInputs or [ ];
            installCheckInputs = attrs.checkInputs or [ ] ++ attrs.installCheckInputs or [ ];
            outputs = attrs.outputs or [ "out" ] ++ lib.optional withDistOutput "dist";
            # What the stub was given, for tests of the arguments themselves.
            pythonFormat = format';
          };
    in
    final;
in
packages
// {
  inherit python otherPython buildPythonApplication;
  buildPythonPackage = buildPythonApplication;
  pytestCheckHook = hook "pytest-check-hook";
  # A module of the same name built for another interpreter (tests of the mismatch check).
  forOtherPython = lib.mapAttrs (module otherPython) (defaultVersions // versions);
}
