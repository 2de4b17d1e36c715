# The one definition of a model's options, shared by lib.fetchModel and the
# Home Manager, devenv and NixOS modules.
{ lib }:

let
  inherit (lib) mkOption types literalExpression;
  naming = import ./naming.nix { inherit lib; };

  # How to get a pinned commit and hash; part of every error about them.
  pinHint =
    { repo, repoType ? "model", ref ? "main" }:
    let
      url = naming.hubGitUrl { repoId = repo; inherit repoType; };
    in
    ''
      Get the commit and the SRI hash of the snapshot with
          model-repo prefetch ${repo}
      (it prints both), or the commit alone with
          git ls-remote ${url} ${ref}
      A branch or tag name moves when upstream pushes, which would break the
      fixed-output hash, so only a full commit is accepted.'';

  checkRevision =
    { model, repo, repoType ? "model", ref ? "main", revision }:
    if naming.isCommit revision then
      revision
    else
      throw ''
        model-repo: model "${model}": source.huggingface.revision must be a pinned 40-character lowercase hex commit, ${
          if revision == null then "but none is set" else "got \"${toString revision}\""
        }.
        ${pinHint { inherit repo repoType ref; }}'';

  checkHash =
    { model, hash, repo ? null }:
    if naming.isSriHash hash then
      hash
    else
      throw ''
        model-repo: model "${model}": hash must be an SRI hash such as "sha256-<base64>", ${
          if hash == null then "but none is set" else "got \"${toString hash}\""
        }.
        ${
          if repo != null then "Run `model-repo prefetch ${repo}` to print it, or set" else "Set"
        } hash = lib.fakeHash; build once, and copy the "got:" value of the hash mismatch error.'';

  checkRepo =
    { model, repo }:
    if naming.isValidRepoId repo then
      repo
    else
      throw ''
        model-repo: model "${model}": source.huggingface.repo must be a full repo id "ORG/NAME" (e.g. "google-bert/bert-base-uncased"), got "${toString repo}".'';

  huggingfaceSource =
    model:
    types.submodule (
      { config, ... }:
      {
        options = {
          repo = mkOption {
            type = types.str;
            example = "sentence-transformers/all-MiniLM-L6-v2";
            apply = repo: checkRepo { inherit model repo; };
            description = "Repo id on the Hugging Face Hub, `ORG/NAME`.";
          };
          revision = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";
            apply =
              revision:
              checkRevision {
                inherit model revision;
                inherit (config) repo repoType ref;
              };
            description = ''
              The commit to fetch: exactly 40 lowercase hex characters. Branch
              and tag names are rejected because they move. `model-repo prefetch
              ORG/NAME` prints the current commit of `main` and the matching hash.
            '';
          };
          ref = mkOption {
            # Same rule as the activator: "/"-separated segments, each starting
            # with a letter, digit or "_".
            type = types.strMatching "[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*";
            default = "main";
            example = "v1.0";
            description = ''
              The ref (branch or tag) the commit was taken from. The activator
              writes `refs/<ref>` in the hub cache so that loading by repo id
              without a revision finds the snapshot.
            '';
          };
          repoType = mkOption {
            type = types.enum [
              "model"
              "dataset"
            ];
            default = "model";
            description = "Repo type on the Hub.";
          };
          files = mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [
              "config.json"
              "model.safetensors"
            ];
            description = "Exact file paths to fetch. Empty means every file (subject to {option}`include`/{option}`exclude`).";
          };
          include = mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [ "*.safetensors" ];
            description = "Git sparse-checkout patterns of files to fetch, in addition to {option}`files`.";
          };
          exclude = mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [
              "*.bin"
              "onnx/*"
            ];
            description = "Git sparse-checkout patterns of files to leave out.";
          };
        };
      }
    );

  # Sources another issue will implement: accepted as written (freeform) so
  # that a configuration parses, then refused by the fetcher with a message.
  futureSource =
    description:
    mkOption {
      type = types.nullOr (types.submodule { freeformType = types.attrsOf types.anything; });
      default = null;
      description = "${description} Not supported yet: evaluation fails with a message when it is used.";
    };

  validationModule = {
    options = {
      requiredFiles = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "config.json"
          "tokenizer.json"
        ];
        description = ''
          Files that must exist in the fetched snapshot. The fetch fails with
          the missing file's name otherwise (checked once, at build time).
        '';
      };
    };
  };

  networkModule = {
    options = {
      timeout = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = ''
          Connection timeout in seconds, for the `url` and `s3` fetchers (not
          implemented yet). The git-based Hugging Face fetcher does not use it;
          setting it on such a model gives an evaluation warning.
        '';
      };
      retries = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        description = "Retries, for the `url` and `s3` fetchers (not implemented yet); see {option}`timeout`.";
      };
    };
  };

  validationType = types.submodule validationModule;
  networkType = types.submodule networkModule;

  # The model submodule. `name` is the attribute name in `models`, or the
  # `name` special argument when fetchModel evaluates it on its own.
  modelModule =
    { name, config, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
          defaultText = literalExpression "<the attribute name>";
          description = ''
            Name of the model: the key in the manifest and the suffix of its
            environment variable (`bert-base` gives `MODEL_REPO_BERT_BASE`).
            Must match `${naming.modelNameRule}`.
          '';
        };

        source = {
          huggingface = mkOption {
            type = types.nullOr (huggingfaceSource config.name);
            default = null;
            example = literalExpression ''
              {
                repo = "sentence-transformers/all-MiniLM-L6-v2";
                revision = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";
              }
            '';
            description = "A repo on the Hugging Face Hub, fetched with git and git-lfs at a pinned commit.";
          };
          url = futureSource "Files downloaded from URLs.";
          git-lfs = futureSource "Any git repository with LFS files.";
          s3 = futureSource "An S3 bucket prefix.";
        };

        hash = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
          apply =
            hash:
            checkHash {
              model = config.name;
              inherit hash;
              repo = if config.source.huggingface != null then config.source.huggingface.repo else null;
            };
          description = ''
            SRI hash of the fetched snapshot (the fixed-output derivation's
            output). `model-repo prefetch ORG/NAME` prints it.
          '';
        };

        integration.huggingface = {
          enable = mkOption {
            type = types.bool;
            default = true;
            description = ''
              Whether to link this model into the hub cache so that libraries
              find it by repo id. When false only `MODEL_REPO_<NAME>` points at it.
            '';
          };
          org = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Organisation part of the repo id to link under (default: the source's).";
          };
          model = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Name part of the repo id to link under (default: the source's).";
          };
        };

        auth = {
          tokenEnvVar = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "HF_TOKEN";
            description = ''
              Environment variable holding a Hub token for gated repos. It is
              read by the fetcher (an impure environment variable of the
              fixed-output derivation), so it must be set where the build runs:
              in the Nix daemon's environment on multi-user installs.
            '';
          };
          tokenFile = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "/run/secrets/hf-token";
            description = ''
              File holding a Hub token for gated repos, read by the fetcher at
              build time. The builder must be able to read it (add it to
              `extra-sandbox-paths` when the sandbox is on).
            '';
          };
        };

        network = mkOption {
          type = networkType;
          default = { };
          description = "Network settings for the fetcher.";
        };

        validation = mkOption {
          type = validationType;
          default = { };
          description = "Checks run on the fetched snapshot.";
        };

        meta = mkOption {
          type = types.attrsOf types.anything;
          default = { };
          example = {
            description = "Sentence embeddings";
            license = "apache-2.0";
          };
          description = "Free-form metadata, available as `passthru.modelMeta` of the fetched store path.";
        };
      };
    };

  modelType = types.submodule modelModule;

  # `models` option with global defaults merged (per key, lower priority than
  # what a model sets itself).
  modelsOption =
    { globalValidation ? { }, globalNetwork ? { }, example ? null }:
    mkOption {
      type = types.attrsOf (
        types.submodule [
          modelModule
          {
            validation = lib.mapAttrs (_: lib.mkDefault) globalValidation;
            network = lib.mapAttrs (_: lib.mkDefault) globalNetwork;
          }
        ]
      );
      default = { };
      example = if example != null then example else literalExpression ''
        {
          all-MiniLM-L6-v2 = {
            source.huggingface = {
              repo = "sentence-transformers/all-MiniLM-L6-v2";
              revision = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";
            };
            hash = "sha256-…"; # printed by `model-repo prefetch`
          };
        }
      '';
      description = ''
        Models to fetch into the Nix store, keyed by name. Each one is a
        fixed-output derivation pinned to a commit; see the model options.
      '';
    };

  globalValidationOption = mkOption {
    type = validationType;
    default = { };
    description = "Validation settings applied to every model unless the model sets its own.";
  };

  globalNetworkOption = mkOption {
    type = networkType;
    default = { };
    description = "Network settings applied to every model unless the model sets its own.";
  };

  # Evaluate a plain attrset (as passed to lib.fetchModel) through the same
  # module, so that defaults and checks are identical.
  evalModel =
    args:
    let
      name = args.name or (throw "model-repo: fetchModel needs a `name` (e.g. name = \"bert-base\";)");
    in
    (lib.evalModules {
      specialArgs = { inherit name; };
      modules = [
        modelModule
        args
      ];
    }).config;
in
{
  inherit
    modelModule
    modelType
    modelsOption
    validationType
    networkType
    globalValidationOption
    globalNetworkOption
    evalModel
    checkRevision
    checkHash
    pinHint
    ;
}
