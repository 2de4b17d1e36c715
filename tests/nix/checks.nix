# `nix flake check`: the evaluation tests of tests/nix against pinned Home
# Manager, devenv and nixpkgs, plus a real build of lib.buildCache loaded by
# huggingface_hub offline. Each check is a derivation that exists only if its
# expectations hold at evaluation time.
{
  pkgs,
  system,
  nixpkgsLib,
  pkgsPath,
  homeManager,
  devenv,
  activator,
}:

let
  inherit (pkgs) lib;
  mr = import ../../lib { inherit lib; };
  rev = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";
  hash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
  model = {
    source.huggingface = {
      repo = "sentence-transformers/all-MiniLM-L6-v2";
      revision = rev;
    };
    inherit hash;
  };

  expect =
    name: conds:
    let
      failed = lib.filterAttrs (_: ok: !ok) conds;
    in
    if failed == { } then
      pkgs.runCommand "model-repo-check-${name}" { } ''
        echo ${lib.escapeShellArg (lib.concatStringsSep ", " (builtins.attrNames conds))} > $out
      ''
    else
      throw "model-repo check ${name} failed: ${lib.concatStringsSep ", " (builtins.attrNames failed)}";

  hm =
    hmSystem: viaSharedModules:
    import ./home-manager.nix {
      inherit nixpkgsLib homeManager pkgsPath viaSharedModules;
      system = hmSystem;
      userModule.programs.model-repo = {
        enable = true;
        models.all-MiniLM = model;
      };
    };
  hmExpect =
    r: {
      after-linkGeneration = r.activation.after == [ "linkGeneration" ];
      calls-activator = lib.hasInfix "activate --manifest" r.activation.data;
      dry-run = lib.hasInfix "\${DRY_RUN+--dry-run}" r.activation.data;
      env-var = r.sessionVariables ? MODEL_REPO_ALL_MINILM;
      offline = r.sessionVariables.HF_HUB_OFFLINE or null == "1";
      no-hf-home = !(r.sessionVariables ? HF_HOME);
      no-systemd = r.systemdUserUnits == [ ];
      assertions = r.failedAssertions == [ ];
    };

  # The module imported but disabled: an entry that only deactivates.
  hmOff = import ./home-manager.nix {
    inherit nixpkgsLib homeManager pkgsPath system;
    userModule.programs.model-repo.models.all-MiniLM = model;
  };
  # Emptied model set: the entry still runs (it prunes).
  hmEmpty = import ./home-manager.nix {
    inherit nixpkgsLib homeManager pkgsPath system;
    userModule.programs.model-repo.enable = true;
  };

  dv = import ./devenv.nix {
    inherit nixpkgsLib devenv system;
    userModule.services.model-repo = {
      enable = true;
      cacheDir = ".cache/huggingface";
      models.all-MiniLM = model;
    };
  };
  # The Home Manager / NixOS spelling (aliases).
  dvAlias = import ./devenv.nix {
    inherit nixpkgsLib devenv system;
    userModule.services.model-repo = {
      enable = true;
      integration.huggingface.cacheDir = "/data/hf";
      models.all-MiniLM = model;
    };
  };
  nxOff = import ./nixos.nix {
    inherit nixpkgsLib system;
    userModule.services.model-repo.models.all-MiniLM = model;
  };
  nxToken = import ./nixos.nix {
    inherit nixpkgsLib system;
    userModule.services.model-repo = {
      enable = true;
      auth.tokenFile = "/run/secrets/hf-token";
      models.all-MiniLM = model;
    };
  };

  nx = import ./nixos.nix {
    inherit nixpkgsLib system;
    userModule.services.model-repo = {
      enable = true;
      models.all-MiniLM = model;
    };
  };

  badRevision = builtins.tryEval (
    builtins.deepSeq (mr.fetchModel pkgs (
      model
      // {
        name = "bad";
        source.huggingface = model.source.huggingface // { revision = "main"; };
      }
    )).outPath true
  );

  # The other sources, evaluated against the real fetchers (fetchurl, fetchgit,
  # linkFarm, runCommand): argument names and derivation attributes.
  urlModel = mr.fetchModel pkgs {
    name = "gguf";
    source.url.files = [
      {
        url = "https://huggingface.co/org/m-GGUF/resolve/${rev}/m-Q4_K_M.gguf";
        inherit hash;
      }
      {
        url = "https://huggingface.co/org/m-GGUF/resolve/${rev}/config.json";
        sha256 = "0000000000000000000000000000000000000000000000000000000000000000";
      }
    ];
    integration.huggingface = {
      org = "org";
      model = "m-gguf";
    };
    auth.tokenEnvVar = "HF_TOKEN";
    network.timeout = 10;
  };
  urlFile = urlModel.files."m-Q4_K_M.gguf";
  gitModel = mr.fetchModel pkgs {
    name = "git";
    source.git-lfs = {
      url = "https://gitlab.com/org/m.git";
      inherit rev;
      include = [ "*.json" ];
    };
    inherit hash;
    auth.tokenFile = "/run/secrets/forge-token";
  };
  s3Model = mr.fetchModel pkgs {
    name = "s3";
    source.s3 = {
      bucket = "models";
      prefix = "m";
      region = "us-east-1";
    };
    inherit hash;
  };

  tinyModel =
    pkgs.runCommand "tiny-model" { } ''
      mkdir -p $out
      printf '{"model_type": "bert"}' > $out/config.json
    ''
    // {
      repoId = "model-repo-test/tiny";
      repoType = "model";
      revision = rev;
      ref = "main";
      hfCachePath = "models--model-repo-test--tiny";
    };
  cache = mr.buildCache pkgs { models = [ tinyModel ]; };
  python = pkgs.python3.withPackages (ps: [ ps.huggingface-hub ]);

  # A tiny dataset repo (one CSV), prepared for the `datasets` library with
  # lib.prepareDataset (nixpkgs' python3Packages.datasets and this activator), linked by
  # the activator and loaded by repo id offline.
  tinyDataset = pkgs.runCommand "tiny-dataset" { } ''
    mkdir -p $out/data
    printf 'text,label\na,0\nbb,1\n' > $out/data/train.csv
  '';
  preparedDataset = mr.prepareDataset pkgs {
    snapshot = tinyDataset;
    repoId = "model-repo-test/TinySet";
    revision = rev;
    package = activator;
  };
  datasetsManifest = pkgs.writeText "datasets-manifest.json" (
    builtins.toJSON {
      version = 1;
      profile = "check";
      offline = true;
      storeDir = builtins.storeDir;
      models.tiny = {
        repoId = "model-repo-test/TinySet";
        repoType = "dataset";
        revision = rev;
        path = "${tinyDataset}";
        prepared = "${preparedDataset}";
      };
    }
  );
  datasetsPython = pkgs.python3.withPackages (ps: [ ps.datasets ]);
in
{
  eval-home-manager-linux = expect "home-manager-linux" (hmExpect (hm "x86_64-linux" false));
  eval-home-manager-darwin-shared = expect "home-manager-darwin" (hmExpect (hm "aarch64-darwin" true));
  eval-home-manager-prune-and-disable = expect "home-manager-prune-and-disable" {
    empty-runs = lib.hasInfix "activate --manifest" hmEmpty.activation.data;
    disabled-deactivates = lib.hasInfix "deactivate --profile home-manager" hmOff.activation.data;
    disabled-no-env = hmOff.sessionVariables == { };
  };
  eval-devenv-alias = expect "devenv-alias" {
    hub = dvAlias.env.HF_HUB_CACHE == "/data/hf/hub";
  };
  eval-nixos-disable-and-token = expect "nixos-disable-and-token" {
    disabled-unit = nxOff.services.model-repo.unitConfig.ConditionPathExistsGlob == "/var/lib/model-repo/*.json";
    token-default = nxToken.tokenFiles.all-MiniLM == "/run/secrets/hf-token";
    partial-ok = nxToken.services.model-repo.serviceConfig.SuccessExitStatus == "1";
  };
  eval-devenv = expect "devenv" {
    task-before-shell = dv.task.before == [ "devenv:enterShell" ];
    status-checks-link = lib.hasInfix "readlink" dv.task.status;
    relative-cache-dir = dv.env.HF_HUB_CACHE == "/home/alice/project/.cache/huggingface/hub";
    env-var = dv.env ? MODEL_REPO_ALL_MINILM;
  };
  eval-nixos = expect "nixos" {
    oneshot = nx.services.model-repo.serviceConfig.Type == "oneshot";
    umask = nx.services.model-repo.serviceConfig.UMask == "0002";
    state-dir = nx.services.model-repo.environment.MODEL_REPO_STATE_DIR == "/var/lib/model-repo";
    hub = nx.environment.HF_HUB_CACHE == "/var/cache/huggingface/hub";
    group = nx.groups == [ "model-repo" ];
  };
  eval-naming = expect "naming" {
    dash = mr.envVarName "bert-base" == "MODEL_REPO_BERT_BASE";
    dot = mr.envVarName "all.MiniLM" == "MODEL_REPO_ALL_MINILM";
    folder = mr.hubFolderName { repoId = "a/b"; repoType = "dataset"; } == "datasets--a--b";
  };
  eval-rejects-branch-revision = expect "rejects-branch-revision" { fails = !badRevision.success; };
  eval-sources = expect "sources" {
    url-dir = builtins.isString urlModel.drvPath && lib.hasSuffix "/m-Q4_K_M.gguf" urlModel.file;
    url-flat-hash = builtins.isString urlFile.drvPath && (urlFile.outputHashMode or "flat") == "flat";
    url-token = builtins.elem "HF_TOKEN" (urlFile.impureEnvVars or urlFile.fetchArgs.netrcImpureEnvVars);
    url-repo = urlModel.repoId == "org/m-gguf";
    git-drv = builtins.isString gitModel.drvPath && gitModel.revision == rev;
    git-lfs = gitModel.fetchLFS or gitModel.fetchArgs.fetchLFS;
    # fetchgit runs netrcPhase as its postHook.
    git-netrc = lib.hasInfix "gitlab.com model-repo" (gitModel.postHook or gitModel.fetchArgs.netrcPhase);
    s3-fod = builtins.isString s3Model.drvPath && s3Model.outputHashMode == "recursive" && s3Model.outputHash == hash;
    s3-env = builtins.elem "AWS_SECRET_ACCESS_KEY" s3Model.impureEnvVars;
  };

  build-cache-loads-offline = pkgs.runCommand "model-repo-check-build-cache" { nativeBuildInputs = [ python ]; } ''
    test "$(cat ${cache}/models--model-repo-test--tiny/refs/main)" = ${rev}
    test "$(wc -c < ${cache}/models--model-repo-test--tiny/refs/main)" = 40
    HF_HUB_OFFLINE=1 HOME=$TMPDIR python - <<'PY'
    from huggingface_hub import hf_hub_download
    p = hf_hub_download("model-repo-test/tiny", "config.json", cache_dir="${cache}")
    assert open(p).read() == '{"model_type": "bert"}', p
    PY
    touch $out
  '';

  datasets-load-offline =
    pkgs.runCommand "model-repo-check-datasets" { nativeBuildInputs = [ datasetsPython ]; }
      ''
        export HOME=$TMPDIR HF_HOME=$TMPDIR/hf
        eval "$(${lib.getExe activator} activate --manifest ${datasetsManifest} --state-dir $TMPDIR/state)"
        test "$HF_DATASETS_OFFLINE" = 1
        python - <<'PY'
        import datasets
        ds = datasets.load_dataset("model-repo-test/TinySet", split="train")
        assert ds[:]["text"] == ["a", "bb"], ds[:]
        PY
        touch $out
      '';

  activator = activator;
}
