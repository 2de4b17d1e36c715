# Fetchers: a model's options -> a store path holding the repo's files at the
# pinned commit, as a flat directory (no blobs/, no snapshots/).
{ lib }:

let
  naming = import ./naming.nix { inherit lib; };
  options = import ./options.nix { inherit lib; };

  sourceNames = [
    "huggingface"
    "url"
    "git-lfs"
    "s3"
  ];

  # Which source a model uses; exactly one must be set.
  sourceType =
    cfg:
    let
      set = builtins.filter (s: cfg.source.${s} != null) sourceNames;
    in
    if builtins.length set == 1 then
      builtins.head set
    else
      throw ''
        model-repo: model "${cfg.name}": set exactly one of source.huggingface, source.url, source.git-lfs, source.s3 (${
          if set == [ ] then "none is set" else "set: " + lib.concatMapStringsSep ", " (s: "source.${s}") set
        }).'';

  unsupported =
    cfg: s:
    throw ''
      model-repo: model "${cfg.name}": source.${s} is not supported yet; only source.huggingface can be fetched for now.
      Put the files in a repo on the Hugging Face Hub, or fetch them yourself and use the store path directly.'';

  # Sparse-checkout patterns (non-cone mode) from files/include/exclude.
  sparsePatterns =
    hf:
    let
      wanted = map (f: "/" + lib.removePrefix "/" f) hf.files ++ hf.include;
    in
    if wanted == [ ] && hf.exclude == [ ] then
      [ ]
    else
      (if wanted == [ ] then [ "/*" ] else wanted) ++ map (p: "!" + p) hf.exclude;

  # Shell for the netrc the git fetcher uses for gated repos.
  netrcFor =
    cfg:
    let
      a = cfg.auth;
    in
    if a.tokenFile != null then
      {
        netrcPhase = ''
          if [ ! -r ${lib.escapeShellArg a.tokenFile} ]; then
            echo "model-repo: model ${cfg.name}: auth.tokenFile ${a.tokenFile} is not readable by the builder (add it to extra-sandbox-paths)" >&2
            exit 1
          fi
          printf 'machine huggingface.co login hf password %s\n' "$(cat ${lib.escapeShellArg a.tokenFile})" > netrc
        '';
      }
    else if a.tokenEnvVar != null then
      {
        netrcImpureEnvVars = [ a.tokenEnvVar ];
        netrcPhase = ''
          if [ -z "''${${a.tokenEnvVar}:-}" ]; then
            echo "model-repo: model ${cfg.name}: auth.tokenEnvVar ${a.tokenEnvVar} is empty in the builder's environment" >&2
            exit 1
          fi
          printf 'machine huggingface.co login hf password %s\n' "''$${a.tokenEnvVar}" > netrc
        '';
      }
    else
      { };

  requiredFilesCheck =
    cfg:
    lib.concatMapStrings (f: ''
      if [ ! -e "$out"/${lib.escapeShellArg f} ]; then
        echo "model-repo: model ${cfg.name}: validation.requiredFiles: ${f} is missing from the snapshot" >&2
        exit 1
      fi
    '') cfg.validation.requiredFiles;

  storeName =
    hf: "hf-" + builtins.replaceStrings [ "/" ] [ "--" ] hf.repo + "-" + builtins.substring 0 12 hf.revision;

  # Use nixpkgs' own fetchFromHuggingFace when it exists and takes the
  # arguments we need; otherwise fetchgit with LFS.
  canUseHfFetcher =
    pkgs: cfg:
    let
      f = pkgs.fetchFromHuggingFace or null;
      args = if f == null then { } else lib.functionArgs f;
      has = n: args ? ${n};
    in
    f != null
    && has "owner"
    && has "repo"
    && has "rev"
    && has "hash"
    && (cfg.source.huggingface.repoType == "model" || has "repoType")
    && (sparsePatterns cfg.source.huggingface == [ ] || has "sparseCheckout")
    && cfg.auth.tokenFile == null
    && cfg.auth.tokenEnvVar == null
    && cfg.validation.requiredFiles == [ ];

  fetchHuggingface =
    pkgs: cfg:
    let
      hf = cfg.source.huggingface;
      parts = lib.splitString "/" hf.repo;
      org = builtins.elemAt parts 0;
      model = builtins.elemAt parts 1;
      sparse = sparsePatterns hf;
      src =
        if canUseHfFetcher pkgs cfg then
          pkgs.fetchFromHuggingFace (
            {
              owner = org;
              repo = model;
              rev = hf.revision;
              inherit (cfg) hash;
            }
            // lib.optionalAttrs (hf.repoType != "model") { inherit (hf) repoType; }
            // lib.optionalAttrs (sparse != [ ]) { sparseCheckout = sparse; }
          )
        else
          pkgs.fetchgit (
            {
              name = storeName hf;
              url = naming.hubGitUrl {
                repoId = hf.repo;
                inherit (hf) repoType;
              };
              rev = hf.revision;
              inherit (cfg) hash;
              fetchLFS = true;
            }
            // lib.optionalAttrs (sparse != [ ]) {
              sparseCheckout = sparse;
              nonConeMode = true;
            }
            // lib.optionalAttrs (cfg.validation.requiredFiles != [ ]) { postFetch = requiredFilesCheck cfg; }
            // netrcFor cfg
          );
      extra = {
        repoId = hf.repo;
        inherit org model;
        inherit (hf) repoType revision ref;
        sourceType = "huggingface";
        hfCachePath = naming.hubFolderName {
          repoId = hf.repo;
          inherit (hf) repoType;
        };
        modelName = cfg.name;
        modelMeta = cfg.meta;
      };
    in
    src // extra // { passthru = (src.passthru or { }) // extra; };

  # A model's evaluated options -> its store path (a derivation).
  fetchModelConfig =
    pkgs: cfg:
    let
      s = sourceType cfg;
    in
    if s == "huggingface" then fetchHuggingface pkgs cfg else unsupported cfg s;

  fetchModel = pkgs: args: fetchModelConfig pkgs (options.evalModel args);

  # Same as fetchModel, with the repo type forced to "dataset".
  fetchDataset =
    pkgs: args:
    fetchModel pkgs (
      if args ? source.huggingface then
        lib.recursiveUpdate args { source.huggingface.repoType = "dataset"; }
      else
        args
    );
in
{
  inherit
    sourceType
    sparsePatterns
    fetchModelConfig
    fetchModel
    fetchDataset
    ;
}
