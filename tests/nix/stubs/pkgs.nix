# A small stand-in for a nixpkgs package set: enough to evaluate the modules
# (Home Manager's full module set included) without nixpkgs.
#
#   fetchResults: { "<url>" = "<store path>"; } — what the stub fetchgit
#   (git URL), fetchFromHuggingFace and fetchurl (first URL) return. Paths are
#   turned into real store paths with builtins.storePath when `realStorePaths`
#   is true (the path must exist).
#
# Every stub fetcher records its arguments as `fetcher` and `fetchArgs`;
# runCommand and linkFarm are real derivations over the host's /bin/sh that
# record theirs as `runCommandArgs` / `linkFarmArgs`.
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
  # A store path with bin/aws standing in for the AWS CLI (tests of source.s3).
  awscliPath ? null,
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

  fetched = kind: args: url: fetchedNamed kind args url (args.name or "source");
  fetchedNamed =
    kind: args: url: name:
    let
      p = fetchResults.${url} or null;
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
  # runCommand as nixpkgs' (pkgs/build-support/trivial-builders: runCommandWith
  # over stdenvNoCC.mkDerivation): the script is `buildCommand`, passed as a file
  # (passAsFile, so a long script is no argument of the builder), run with
  # `set -eu` as stdenv's setup does; env's attributes go to the derivation,
  # its passthru to the result. A real derivation over the host's /bin/sh (no
  # stdenv): used to build lib.buildCache, linkFarm and the s3 fetcher with
  # Debian's nix-build. nativeBuildInputs are put on PATH as stdenv would.
  # Records its arguments as `runCommandArgs`.
  runCommand =
    name: env: script:
    derivation (
      {
        inherit name system;
        builder = "/bin/sh";
        args = [
          "-c"
          "set -eu; . \"$buildCommandPath\""
        ];
        buildCommand = script;
        PATH = lib.concatMapStrings (p: "${p}/bin:") (env.nativeBuildInputs or [ ]) + "/bin:/usr/bin";
      }
      // builtins.removeAttrs env [
        "passthru"
        "passAsFile"
      ]
      // {
        passAsFile = [ "buildCommand" ] ++ (env.passAsFile or [ ]);
      }
    )
    // (env.passthru or { })
    // {
      runCommandArgs = {
        inherit name env script;
      };
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

  # With realStorePaths, a real store file (builtins.toFile), so that generated
  # scripts naming it (the manifest) can be run by the tests; not when the text
  # names a derivation's output (toFile cannot).
  writeText =
    name: text:
    fakeDrv name text { inherit text; }
    // lib.optionalAttrs (
      realStorePaths && !lib.any (c: c ? outputs) (builtins.attrValues (builtins.getContext text))
    ) { outPath = builtins.toFile name text; };

  writeScript = name: text: fakeDrv name text { inherit text; };
  writeShellScript = name: text: fakeDrv name text { inherit text; };
  writeShellScriptBin = name: text: fakeDrv name text { inherit text; };

  symlinkJoin = args: fakeDrv args.name (builtins.toJSON (map toString args.paths or [ ])) { };
  buildEnv = args: fakeDrv args.name args.name { };

  fetchgit = args: fetched "fetchgit" args args.url;

  # nixpkgs' fetchurl (pkgs/build-support/fetchurl/default.nix) as far as its
  # arguments go: exactly one of url and urls, at most one hash, the name
  # pname-version, else name, else the base name of the first URL; the name is a
  # derivation's, checked as Nix checks it (no ".drv" ending, store path
  # characters, length); passthru url and resolvedUrl.
  fetchurl =
    args:
    let
      url = args.url or "";
      urls = args.urls or [ ];
      urls' =
        if urls != [ ] && url == "" then
          urls
        else if urls == [ ] && url != "" then
          [ url ]
        else
          throw "fetchurl requires either `url` or `urls` to be set";
      hashes = builtins.filter (h: h != "") (
        map (n: args.${n} or "") [ "hash" "outputHash" "sha1" "sha256" "sha512" ]
      );
      name =
        if args.pname or null != null && args.version or null != null then
          "${args.pname}-${args.version}"
        else if args.name or null != null then
          args.name
        else
          baseNameOf (toString (builtins.head urls'));
      # Nix's own checks of a derivation name, by a derivation of that name.
      checked = builtins.seq (derivation {
        inherit name system;
        builder = "/bin/sh";
      }).drvPath name;
    in
    if builtins.length hashes > 1 then
      throw "multiple hashes passed to fetchurl"
    else
      fetchedNamed "fetchurl" args (builtins.head urls') checked
      // {
        inherit url;
        resolvedUrl = url;
      };

  awscli2 =
    if awscliPath != null then
      {
        type = "derivation";
        name = "awscli2-stub";
        outPath = builtins.storePath awscliPath;
      }
    else
      fakeDrv "awscli2-2.22.0" "awscli2" { meta.mainProgram = "aws"; };
  cacert = fakeDrv "nss-cacert-3.107" "cacert" { };

  inherit runCommand;

  # nixpkgs' linkFarm (pkgs/build-support/trivial-builders/default.nix), the same
  # code: entries are an attribute set name -> path, or a list of { name; path; }
  # folded into one with `//` (last wins for a repeated name; quadratic, as
  # nixpkgs'), anything else throws; `--` before every name given to dirname and
  # ln (names may start with "-"); passthru.entries is the attribute set.
  # Records its arguments as `linkFarmArgs` (entries as a list by name).
  linkFarm =
    name: entries:
    let
      entries' =
        if (lib.isAttrs entries) then
          entries
        else if (lib.isList entries) then
          lib.foldl (a: b: a // { "${b.name}" = b.path; }) { } entries
        else
          throw "linkFarm entries must be either attrs or a list!";

      linkCommands = lib.mapAttrsToList (name: path: ''
        mkdir -p -- "$(dirname -- ${lib.escapeShellArg "${name}"})"
        ln -s -- ${lib.escapeShellArg "${path}"} ${lib.escapeShellArg "${name}"}
      '') entries';
    in
    runCommand name
      {
        preferLocalBuild = true;
        allowSubstitutes = false;
        passthru.entries = entries';
      }
      ''
        mkdir -p $out
        cd $out
        ${lib.concatStrings linkCommands}
      ''
    // {
      linkFarmArgs = {
        inherit name;
        entries = lib.mapAttrsToList (n: p: {
          name = n;
          path = "${p}";
        }) entries';
      };
    };
}
// lib.optionalAttrs (withHfFetcher == true) {
  # nixpkgs' fetchFromHuggingFace (pkgs/build-support/fetchhuggingface/default.nix):
  # its argument set, its "xet" default that throws, fetchgit with LFS underneath;
  # `hash` and other fetchgit arguments go through `...`. Records its arguments.
  fetchFromHuggingFace =
    {
      repoId,
      tag ? null,
      rev ? null,
      name ? "source",
      domain ? "huggingface.co",
      repoType ? "model",
      backend ? "xet",
      sparseCheckout ? null,
      ...
    }@args:
    assert lib.assertMsg (backend == "lfs") "fetchFromHuggingFace: the Xet backend is not implemented yet";
    fetched "fetchFromHuggingFace" args "https://${domain}/${
      if repoType == "dataset" then "datasets/" else ""
    }${repoId}";
}
// lib.optionalAttrs (withHfFetcher == "owner-repo") {
  # A fetcher of that name with another signature (owner/repo, as a draft of it
  # had): model-repo must not call it.
  fetchFromHuggingFace =
    {
      owner,
      repo,
      rev,
      hash,
      name ? "source",
    }@args:
    fetched "fetchFromHuggingFace" args "https://huggingface.co/${owner}/${repo}";
}
