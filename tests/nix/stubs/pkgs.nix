# A small stand-in for a nixpkgs package set: enough to evaluate the modules
# (Home Manager's full module set included) without nixpkgs.
#
#   fetchResults: { "<git url>" = "<store path>"; } — what the stub fetchgit
#   returns for a URL. Paths are turned into real store paths with
#   builtins.storePath when `realStorePaths` is true (the path must exist).
{
  lib,
  system ? "x86_64-linux",
  fetchResults ? { },
  realStorePaths ? false,
  withHfFetcher ? false,
  # A folder with `lib` (nixpkgs' lib) and `nixos/modules/misc/{assertions,meta}.nix`
  # (see ./nixpkgs-path). Tests build it in a temporary directory; flake checks
  # pass a real nixpkgs.
  pkgsPath ? ./nixpkgs-path,
  # Point coreutils at the host's /usr (…/bin/readlink, …/bin/cat) so that
  # generated shell can be run by the tests.
  hostCoreutils ? false,
}:

let
  fakeHash = s: builtins.substring 0 32 (builtins.hashString "sha256" s);
  # Base32 alphabet of store hashes has no e, o, t, u.
  fakeStorePath =
    name: seed:
    "${builtins.storeDir}/${
      builtins.replaceStrings [ "e" "o" "t" "u" ] [ "0" "1" "2" "3" ] (fakeHash seed)
    }-${name}";

  fakeDrv =
    name: seed: extra:
    {
      type = "derivation";
      inherit name;
      outPath = fakeStorePath name seed;
      drvPath = fakeStorePath "${name}.drv" seed;
      outputs = [ "out" ];
      meta = { };
    }
    // extra;

  fetched =
    kind: args: url:
    let
      p = fetchResults.${url} or null;
      name = args.name or "source";
    in
    if p == null then
      fakeDrv name (builtins.toJSON (builtins.removeAttrs args [ "netrcPhase" "postFetch" ])) {
        fetcher = kind;
        fetchArgs = args;
      }
    else
      {
        type = "derivation";
        inherit name;
        outPath = if realStorePaths then builtins.storePath p else p;
        drvPath = fakeStorePath "${name}.drv" p;
        outputs = [ "out" ];
        fetcher = kind;
        fetchArgs = args;
      };
in
{
  inherit lib system;
  stdenv.hostPlatform = lib.systems.elaborate system;
  stdenv.isLinux = (lib.systems.elaborate system).isLinux;
  stdenv.isDarwin = (lib.systems.elaborate system).isDarwin;
  path = pkgsPath;

  formats =
    let
      f = _: {
        type = lib.types.attrsOf lib.types.anything;
        generate = name: value: fakeDrv name (builtins.toJSON value) { };
        lib.types.atom = lib.types.anything;
      };
    in
    {
      toml = f;
      ini = f;
      keyValue = f;
      json = f;
      yaml = f;
      xml = f;
      javaProperties = f;
      iniWithGlobalSection = f;
    };

  glibcLocales = fakeDrv "glibc-locales" "glibc-locales" { version = "2.40"; };
  glibcLocalesUtf8 = fakeDrv "glibc-locales-utf8" "glibc-locales-utf8" { version = "2.40"; };
  coreutils =
    fakeDrv "coreutils-9.5" "coreutils" { meta.mainProgram = "coreutils"; }
    // lib.optionalAttrs hostCoreutils { outPath = "/usr"; };
  bash = fakeDrv "bash-5.2" "bash" { meta.mainProgram = "bash"; };

  model-repo = fakeDrv "model-repo-0.1.0" "model-repo" { meta.mainProgram = "model-repo"; };

  writeText =
    name: text:
    fakeDrv name text { inherit text; };

  writeScript = name: text: fakeDrv name text { inherit text; };
  writeShellScript = name: text: fakeDrv name text { inherit text; };
  writeShellScriptBin = name: text: fakeDrv name text { inherit text; };

  symlinkJoin = args: fakeDrv args.name (builtins.toJSON (map toString args.paths or [ ])) { };
  buildEnv = args: fakeDrv args.name args.name { };

  fetchgit = args: fetched "fetchgit" args args.url;

  # Real runCommand over the host's /bin/sh (no stdenv): used to build
  # lib.buildCache with Debian's nix-build.
  runCommand =
    name: env: script:
    derivation (
      {
        inherit name system;
        builder = "/bin/sh";
        args = [
          "-c"
          script
        ];
        PATH = "/bin:/usr/bin";
      }
      // builtins.removeAttrs env [ "passthru" ]
    )
    // (env.passthru or { });
}
// lib.optionalAttrs withHfFetcher {
  # Same arguments as the fetcher under review in nixpkgs; returns like fetchgit.
  fetchFromHuggingFace =
    {
      owner,
      repo,
      rev,
      hash,
      repoType ? "model",
      sparseCheckout ? [ ],
    }@args:
    fetched "fetchFromHuggingFace" args "https://huggingface.co/${
      if repoType == "dataset" then "datasets/" else ""
    }${owner}/${repo}";
}
