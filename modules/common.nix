# Shared by the Home Manager, devenv and NixOS modules: the options every one
# of them has, and everything derived from `models`.
{ lib }:

let
  mr = import ../lib { inherit lib; };
  inherit (mr) naming manifest datasets;
  inherit (lib) mkOption types literalExpression;

  groupBy' = f: xs: builtins.groupBy f xs;
in
rec {
  inherit mr;

  packageOption =
    pkgs:
    mkOption {
      type = types.package;
      default = pkgs.model-repo or (pkgs.callPackage ../lib/package.nix { });
      defaultText = literalExpression "pkgs.model-repo (with this flake's overlay), else the flake's own build";
      description = "The package providing the `model-repo` activator.";
    };

  # Options all three modules share, under their own prefix.
  #   cfg: the module's config; defaultTokenFile: see lib/options.nix modelsOption.
  sharedOptions =
    cfg:
    {
      models = mr.options.modelsOption {
        globalValidation = cfg.globalValidation;
        globalNetwork = cfg.globalNetwork;
        defaultTokenFile = cfg.auth.tokenFile or null;
        defaultLockFile = cfg.lockFile;
      };
      lockFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = literalExpression "./model-repo.lock.json";
        description = ''
          The lock file of `model-repo lock` / `model-repo update`: the default
          `lockFile` of every model, so that a Hub model needs only
          `source.huggingface.repo` (and `ref`): its commit and per-file hashes
          come from the entry of its name.
        '';
      };
      globalValidation = mr.options.globalValidationOption;
      globalNetwork = mr.options.globalNetworkOption;
    };

  readOnlyOptions = prefix: {
    modelPaths = mkOption {
      type = types.attrsOf types.package;
      readOnly = true;
      description = ''
        The store path of every model, by its attribute name in
        {option}`${prefix}.models`: a flat directory of the repo's files that
        `from_pretrained` and similar loaders accept directly.
      '';
    };
    manifest = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      internal = true;
      description = "The manifest given to the activator, as an attribute set.";
    };
    manifestFile = mkOption {
      type = types.path;
      readOnly = true;
      internal = true;
      description = "The manifest given to the activator, as a store path.";
    };
  };

  # Everything that follows from `models`.
  #   opt: option prefix for messages, e.g. "programs.model-repo"
  #   linkEnabled: module-wide switch for linking into the hub cache
  resolve =
    {
      pkgs,
      cfg,
      opt,
      linkEnabled,
      profile,
      cacheDir,
      offline,
      # The `datasets` cache prepared datasets are linked into (null: the activator
      # resolves it as the datasets library does).
      datasetsCacheDir ? null,
    }:
    let
      models = cfg.models;
      list = lib.mapAttrsToList (attr: m: { inherit attr m; }) models;
      drvs = lib.mapAttrs (_: m: mr.fetchModelConfig pkgs m) models;
      isDataset = m: m.source.huggingface != null && m.source.huggingface.repoType == "dataset";
      wantsPrepared = m: m.integration.datasets.enable;
      # Datasets prepared for the `datasets` library (lib/datasets.nix), by attribute.
      prepared = lib.mapAttrs (
        attr: m:
        let
          e = manifest.mkEntry {
            cfg = m;
            drv = drvs.${attr};
            inherit linkEnabled;
          };
        in
        if wantsPrepared m && isDataset m then
          datasets.prepareDataset pkgs {
            snapshot = drvs.${attr};
            inherit (e) repoId revision;
            inherit (m.integration.datasets) configs;
            package = cfg.package or null;
          }
        else
          null
      ) models;
      entries = lib.listToAttrs (
        map (x: {
          name = x.m.name;
          value = manifest.mkEntry {
            cfg = x.m;
            drv = drvs.${x.attr};
            prepared = prepared.${x.attr};
            inherit linkEnabled;
          };
        }) list
      );
      # MODEL_REPO_<NAME>_FILE: the model's one file when it has one (`file`: a
      # GGUF quantization's model file or first part, a source.url main file).
      hasFile = x: (drvs.${x.attr}.file or null) != null;
      envVars = lib.listToAttrs (
        map (x: {
          name = naming.envVarName x.m.name;
          value = "${drvs.${x.attr}}";
        }) list
        ++ map (x: {
          name = naming.fileVarName x.m.name;
          value = drvs.${x.attr}.file;
        }) (builtins.filter hasFile list)
      );
      manifestData = manifest.mkManifest {
        inherit profile cacheDir offline;
        datasetsCacheDir = if anyPrepared then datasetsCacheDir else null;
        models = entries;
      };

      badNames = builtins.filter (x: !naming.isValidModelName x.m.name) list;
      validNames = builtins.filter (x: naming.isValidModelName x.m.name) list;
      byName = groupBy' (x: x.m.name) validNames;
      dupNames = lib.filterAttrs (_: xs: builtins.length xs > 1) byName;
      # Every variable a model exports: MODEL_REPO_<NAME>, and MODEL_REPO_<NAME>_FILE.
      varsOf = x: [ (naming.envVarName x.m.name) ] ++ lib.optional (hasFile x) (naming.fileVarName x.m.name);
      byVar = groupBy' (v: v.var) (
        lib.concatMap (x: map (var: x // { inherit var; }) (varsOf x)) (map builtins.head (builtins.attrValues byName))
      );
      dupVars = lib.filterAttrs (_: xs: builtins.length xs > 1) byVar;

      # Linked models that write the same refs/<ref> with different commits.
      linked = builtins.filter (e: e.link) (
        lib.mapAttrsToList (n: e: e // { name = n; }) entries
      );
      refKeys = lib.concatMap (
        e:
        map (r: {
          key = "${naming.hubFolderName { inherit (e) repoId repoType; }}/refs/${r}";
          inherit e r;
        }) e.refs
      ) linked;
      refGroups = lib.filterAttrs (
        _: xs: builtins.length (lib.unique (map (x: x.e.revision) xs)) > 1
      ) (groupBy' (x: x.key) refKeys);

      quoteList = xs: lib.concatMapStringsSep ", " (x: "\"${x}\"") xs;
      anyPrepared = builtins.any (p: p != null) (builtins.attrValues prepared);
      notDatasets = builtins.filter (x: wantsPrepared x.m && !isDataset x.m) list;
    in
    {
      inherit drvs entries envVars prepared anyPrepared;
      manifest = manifestData;
      manifestFile = pkgs.writeText "model-repo-manifest.json" (builtins.toJSON manifestData);
      anyLinked = linked != [ ];
      # Only evaluate the parts that need valid names when names are valid.
      namesOk = badNames == [ ];

      assertions =
        map (x: {
          assertion = false;
          message = "${opt}.models.${x.attr}.integration.datasets.enable is set, but the model is not a Hub dataset: set source.huggingface.repoType = \"dataset\" (only datasets are prepared for the `datasets` library), or remove it.";
        }) notDatasets
        ++ map (x: {
          assertion = false;
          message = ''
            ${opt}.models.${x.attr}: model name "${x.m.name}" is not allowed. Names must match ${naming.modelNameRule} (letters, digits, "_", then also ".", "+", "-"; at most 100 characters). Rename the attribute or set ${opt}.models.${x.attr}.name.'';
        }) badNames
        ++ lib.mapAttrsToList (n: xs: {
          assertion = false;
          message = "${opt}.models: ${quoteList (map (x: x.attr) xs)} all have the name \"${n}\"; model names must be unique.";
        }) dupNames
        ++ lib.mapAttrsToList (v: xs: {
          assertion = false;
          message = "${opt}.models: the model names ${quoteList (map (x: x.m.name) xs)} map to the same environment variable ${v}; rename one of them.";
        }) dupVars
        ++ lib.mapAttrsToList (k: xs: {
          assertion = false;
          message = "${opt}.models: ${
            quoteList (map (x: x.e.name) xs)
          } link ${builtins.head (lib.splitString "/refs/" k)} with different commits under the same ref \"${(builtins.head xs).r}\"; set source.huggingface.ref of one of them to another ref name.";
        }) refGroups;

      warnings = lib.concatMap (
        x:
        lib.optional
          (x.m.source.huggingface != null && x.m.source.huggingface.fileHashes == { } && (x.m.network.timeout != null || x.m.network.retries != null))
          "${opt}.models.${x.attr}.network is set, but the Hugging Face fetcher (git with LFS) does not use it (per-file fetches, source.huggingface.fileHashes, do)."
      ) list;
    };

  # HF_DATASETS_OFFLINE too: the `datasets` library reads it before HF_HUB_OFFLINE.
  offlineVars = {
    HF_DATASETS_OFFLINE = "1";
    HF_HUB_OFFLINE = "1";
    TRANSFORMERS_OFFLINE = "1";
  };

  # One meaning of `cacheDir` in every module (seeds 000 and 001): an HF_HOME-like
  # folder whose `hub` subfolder is the hub cache (huggingface_hub's
  # constants.HF_HUB_CACHE = HF_HOME/hub). Trailing slashes are dropped.
  #   "/data/models/" -> "/data/models"
  stripTrailingSlashes =
    p:
    let
      s = lib.removeSuffix "/" p;
    in
    if s == p || s == "" then p else stripTrailingSlashes s;
  # cacheDir (HF_HOME-like, no trailing slash) -> the hub cache, exported as HF_HUB_CACHE.
  hubOf = cacheDir: "${cacheDir}/hub";
  # A warning when a cacheDir value already names a hub folder: the old meaning of
  # cacheDir in the Home Manager and devenv modules, which now gives .../hub/hub.
  hubSuffixWarning =
    option: cacheDir:
    lib.optional (lib.last (lib.splitString "/" cacheDir) == "hub")
      "${option} = \"${cacheDir}\" ends in \"hub\": cacheDir is HF_HOME-like and the hub cache is its hub subfolder, so models go to ${cacheDir}/hub (exported as HF_HUB_CACHE). Did you mean its parent, \"${lib.removeSuffix "/hub" cacheDir}\"?";

  # Option: put the `model-repo` command (every subcommand, shell completions) on PATH.
  installCommandOption =
    where:
    mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to install the `model-repo` command ({option}`package`: every
        subcommand, with bash, zsh and fish completions) into ${where}, so that
        `model-repo prefetch`, `model-repo status` and `model-repo deactivate` are at hand.
        Set to false to keep it off PATH; the module still calls it by its store path.
      '';
    };
}
