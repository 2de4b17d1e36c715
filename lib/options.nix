# The one definition of a model's options, shared by lib.fetchModel and the
# Home Manager, devenv and NixOS modules.
{ lib }:

let
  inherit (lib) mkOption types literalExpression;
  naming = import ./naming.nix { inherit lib; };
  lockfile = import ./lockfile.nix { inherit lib; };
  gguf = import ./gguf.nix { inherit lib; };
  # The Hub, source.huggingface.endpoint's default (huggingface_hub's ENDPOINT).
  defaultHubEndpoint = "https://huggingface.co";

  # How to get a pinned commit and hash; part of every error about them.
  pinHint =
    { repo, repoType ? "model", ref ? "main", quant ? null }:
    let
      url = naming.hubGitUrl { repoId = repo; inherit repoType; };
    in
    ''
      Get the commit and the SRI hash of the snapshot with
          model-repo prefetch ${repo}${lib.optionalString (quant != null) ":${quant}"}
      (it prints both), or the commit alone with
          git ls-remote ${url} ${ref}
      A branch or tag name moves when upstream pushes, which would break the
      fixed-output hash, so only a full commit is accepted.'';

  # Same, for a git repository anywhere (source.git-lfs).
  gitPinHint =
    { url }:
    ''
      Get the commit of a branch or tag with
          git ls-remote ${url} <branch or tag>
      A branch or tag name moves when upstream pushes, which would break the
      fixed-output hash, so only a full commit is accepted.'';

  # A commit, or an evaluation error naming the option and how to pin it.
  #   option: "source.huggingface.revision" or "source.git-lfs.rev"
  #   hint: the text of pinHint / gitPinHint
  checkCommit =
    { model, option, hint, revision }:
    if naming.isCommit revision then
      revision
    else
      throw ''
        model-repo: model "${model}": ${option} must be a pinned 40-character lowercase hex commit, ${
          if revision == null then "but none is set" else "got \"${toString revision}\""
        }.
        ${hint}'';

  checkRevision =
    { model, repo, repoType ? "model", ref ? "main", quant ? null, revision }:
    checkCommit {
      inherit model revision;
      option = "source.huggingface.revision";
      hint = pinHint { inherit repo repoType ref quant; };
    };

  # `how`: the sentence telling where the hash comes from, per source.
  checkHash =
    { model, hash, how ? null, allowNull ? false }:
    if naming.isSriHash hash || (allowNull && hash == null) then
      hash
    else
      throw ''
        model-repo: model "${model}": hash must be an SRI hash such as "sha256-<base64>", ${
          if hash == null then "but none is set" else "got ${builtins.toJSON hash}, which ${naming.sriHashError hash}"
        }.
        ${
          if how != null then how + " Or set" else "Set"
        } hash = lib.fakeHash; build once, and copy the "got:" value of the hash mismatch error.'';

  checkRepo =
    { model, repo }:
    if naming.isValidRepoId repo then
      repo
    else
      throw ''
        model-repo: model "${model}": source.huggingface.repo must be a full repo id "ORG/NAME" (e.g. "google-bert/bert-base-uncased"), got "${toString repo}".'';

  # lockFile: the model's lockFile option (null: none). A model that leaves
  # revision unset takes revision and fileHashes from its entry there
  # (lib/lockfile.nix).
  huggingfaceSource =
    model: lockFile:
    types.submodule (
      { config, options, ... }:
      let
        # The revision given in the configuration (not the default) wins over
        # the lock file.
        fromLock = lockFile != null && options.revision.highestPrio >= 1500;
        locked =
          if fromLock then
            lockfile.lockedEntry {
              inherit model lockFile;
              src = config;
            }
          else
            null;
        # The entry's GGUF tag and mmproj choice (`model-repo lock NAME ORG/NAME:QUANT
        # [--mmproj none|PATH]`), read without the checks of lockedEntry (which
        # needs quant): a model that gives no tag takes them from there.
        rawEntry = if fromLock then lockfile.rawEntry model lockFile else { };
        lockedQuant = rawEntry.quant or null;
      in
      {
        options = {
          repo = mkOption {
            type = types.str;
            example = "sentence-transformers/all-MiniLM-L6-v2";
            # "ORG/NAME:QUANT" (nixpkgs' modelRef): the tag goes to `quant`.
            apply = repo: checkRepo { inherit model; repo = (gguf.splitModelRef repo).repo; };
            description = ''
              Repo id on the Hugging Face Hub, `ORG/NAME`; or `ORG/NAME:QUANT`
              for a GGUF quantization (nixpkgs' `modelRef`, e.g.
              `"bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M"`): the tag is
              {option}`quant`, and the option's value is the repo id alone.
            '';
          };
          quant = mkOption {
            type = types.nullOr (types.strMatching gguf.quantRegex);
            default =
              let
                given = if options.repo.isDefined then (gguf.splitModelRef (lib.last options.repo.definitions)).quant else null;
              in
              if given != null then given else lockedQuant;
            defaultText = literalExpression "the QUANT of repo = \"ORG/NAME:QUANT\", else the quant of this model's entry in lockFile, else null";
            example = "Q4_K_M";
            apply =
              quant:
              let
                given = if options.repo.isDefined then (gguf.splitModelRef (lib.last options.repo.definitions)).quant else null;
              in
              if given != null && quant != given then
                throw "model-repo: model \"${model}\": source.huggingface.repo names the quantization \"${given}\" but quant = \"${toString quant}\"; give it once."
              else
                quant;
            description = ''
              A GGUF quantization tag (llama.cpp's `Q4_K_M`, `IQ4_XS`, `Q8_0`,
              `F16`, an uploader's `UD-Q4_K_XL`). Among the model's pinned files
              ({option}`files`, or the keys of {option}`fileHashes` / the lock
              entry) it picks the `.gguf` file whose name ends in `-QUANT`,
              `.QUANT` or `_QUANT` (any case; split files `-0000K-of-0000N` as one
              model, every part required) and the mmproj (see {option}`mmproj`):
              the model's `passthru.modelPath` (the first part), `mmprojPath`,
              `modelRef` and `MODEL_REPO_<NAME>_FILE`, which
              `services.llama-cpp.model` reads. `model-repo prefetch ORG/NAME:QUANT`
              prints the files. The rule: lib/gguf.nix.
            '';
          };
          mmproj = mkOption {
            type = types.nullOr types.str;
            default = if lockedQuant != null then lockfile.entryMmproj rawEntry else "auto";
            defaultText = literalExpression "\"auto\", or the mmproj choice of this model's entry in lockFile";
            example = "mmproj-F16.gguf";
            description = ''
              With {option}`quant`: the multimodal projector. `"auto"`: the
              `mmproj*.gguf` file among the pinned files (by the tag, then F16,
              BF16, F32 when there are several); null: none; or a file's path.
            '';
          };
          revision = mkOption {
            type = types.nullOr types.str;
            default = if locked != null then locked.commit else null;
            defaultText = literalExpression "null, or the commit of this model's entry in lockFile";
            example = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";
            apply =
              revision:
              checkRevision {
                inherit model revision;
                inherit (config) repo repoType ref quant;
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
          fileHashes = mkOption {
            type = types.attrsOf types.str;
            default = if locked != null then lib.mapAttrs (_: f: f.hash) locked.files else { };
            defaultText = literalExpression "{ }, or the files of this model's entry in lockFile";
            example = {
              "config.json" = "sha256-…";
              "model.safetensors" = "sha256-…";
            };
            description = ''
              Pin per file: each file's path from the repo root -> the SRI hash of
              its bytes (a flat sha256; for LFS files the sha256 the Hub publishes).
              When set, the model is fetched per file (one fixed-output `fetchurl`
              of `<endpoint>/<repo>/resolve/<revision>/<path>` per file, a flat
              directory of links to them; no git) and the model's {option}`hash`
              stays unset. `model-repo prefetch --per-file ORG/NAME` prints it;
              `model-repo lock` keeps it in a lock file instead.
            '';
          };
          endpoint = mkOption {
            type = types.strMatching "https?://[^ ]+";
            default = defaultHubEndpoint;
            description = "The Hub (or mirror) that per-file fetches ({option}`fileHashes`) download from, as `HF_ENDPOINT`.";
          };
        }
        // sparseOptions "repo";
      }
    );

  sparseOptions = what: {
    files = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "config.json"
        "model.safetensors"
      ];
      description = "Exact file paths to fetch from the ${what}. Empty means every file (subject to {option}`include`/{option}`exclude`).";
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

  # One file of source.url. Its name, hash and `main` are checked by the
  # fetcher (lib/fetch.nix), which knows the other files.
  urlFileModule = {
    options = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://huggingface.co/ORG/NAME-GGUF/resolve/<commit>/model-Q4_K_M.gguf";
        description = "Where to download the file. Use a URL that names a commit, not a branch.";
      };
      urls = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Several URLs of the same file (mirrors), tried in order; instead of {option}`url`.";
      };
      name = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "model.gguf";
        description = ''
          Path of the file in the model's directory. Default: the last path
          segment of the (first) URL, without its query string. May contain
          "/" (e.g. `1_Pooling/config.json`); no "." or ".." segments.
        '';
      };
      hash = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        description = "SRI hash of the file's bytes (a flat hash, what `nix-prefetch-url` and `sha256sum` compute): `sha256-` or `sha512-` and canonical base64 of the exact length (lib/srihash.nix).";
      };
      sha256 = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "4a8b6a0f1c2e3d4c5b6a79881726354453627180918273645546372819a0b1c2";
        description = ''
          The file's SHA-256 as 64 hex characters, exactly as the Hugging Face
          Hub shows it for LFS files ("SHA256:" on the file's page); instead of
          {option}`hash`.
        '';
      };
      main = mkOption {
        type = types.bool;
        default = false;
        description = "This is the file `passthru.file` points at (default: the first file).";
      };
    };
  };

  urlSource = types.submodule {
    options = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          One file: its URL. Its hash is the model's {option}`hash` (the hash
          of the file itself). For several files use {option}`files`.
        '';
      };
      urls = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "One file: several URLs of it (mirrors), tried in order; instead of {option}`url`.";
      };
      name = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "One file: its name in the model's directory (default: from the URL).";
      };
      files = mkOption {
        type = types.listOf (types.submodule urlFileModule);
        default = [ ];
        example = literalExpression ''
          [
            { url = "https://huggingface.co/ORG/NAME-GGUF/resolve/<commit>/model-Q4_K_M.gguf";
              sha256 = "<64 hex characters from the Hub>"; }
            { url = "https://huggingface.co/ORG/NAME-GGUF/resolve/<commit>/mmproj.gguf";
              hash = "sha256-…"; }
          ]
        '';
        description = ''
          Files to download, each with its own hash, laid out flat in one
          directory under their names.
        '';
      };
    };
  };

  gitLfsSource =
    model:
    types.submodule (
      { config, ... }:
      {
        options = {
          url = mkOption {
            type = types.str;
            example = "https://gitlab.com/org/model.git";
            description = "URL of the git repository (https for authenticated fetches).";
          };
          rev = mkOption {
            type = types.nullOr types.str;
            default = null;
            apply =
              revision:
              checkCommit {
                inherit model revision;
                option = "source.git-lfs.rev";
                hint = gitPinHint { inherit (config) url; };
              };
            description = "The commit to fetch: exactly 40 lowercase hex characters.";
          };
        }
        // sparseOptions "repository";
      }
    );

  s3Source = types.submodule {
    options = {
      bucket = mkOption {
        type = types.strMatching "[A-Za-z0-9][A-Za-z0-9._-]{0,254}";
        example = "my-models";
        description = "Bucket name.";
      };
      prefix = mkOption {
        type = types.str;
        default = "";
        example = "models/llama/";
        description = ''
          The "folder" to fetch: every object whose key starts with
          `<prefix>/` lands in the model's directory under the rest of its key.
          A missing trailing "/" is added; empty means the whole bucket.
        '';
      };
      region = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "us-east-1";
        description = "Region of the bucket (default: the builder's AWS_REGION / AWS_DEFAULT_REGION / profile).";
      };
      endpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://minio.example.org:9000";
        description = "Endpoint URL of an S3-compatible store (MinIO, R2, Ceph, …).";
      };
      anonymous = mkOption {
        type = types.bool;
        default = false;
        description = "Public bucket: send unsigned requests (`--no-sign-request`), no credentials needed.";
      };
      include = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "*.json" "*.safetensors" ];
        description = "Only keys matching one of these patterns (relative to the prefix; aws s3 filters).";
      };
      exclude = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "*.bin" ];
        description = "Leave out keys matching these patterns (applied after {option}`include`).";
      };
    };
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
          Connection timeout in seconds, for the `url` and per-file
          `huggingface` (`source.huggingface.fileHashes`; curl
          `--connect-timeout`) and `s3` (`--cli-connect-timeout`) fetchers.
          The git-based fetchers (huggingface with `hash`, git-lfs) do not use it.
        '';
      };
      retries = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        description = "Retries, for the `url` and per-file `huggingface` (curl `--retry`) and `s3` (`AWS_MAX_ATTEMPTS` = retries + 1) fetchers; see {option}`timeout`.";
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
            type = types.nullOr (huggingfaceSource config.name config.lockFile);
            default = null;
            example = literalExpression ''
              {
                repo = "sentence-transformers/all-MiniLM-L6-v2";
                revision = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";
              }
            '';
            description = "A repo on the Hugging Face Hub, fetched with git and git-lfs at a pinned commit.";
          };
          url = mkOption {
            type = types.nullOr urlSource;
            default = null;
            example = literalExpression ''
              {
                url = "https://huggingface.co/ORG/NAME-GGUF/resolve/<commit>/model-Q4_K_M.gguf";
                # hash = "sha256-…";  (the model's hash is this file's hash)
              }
            '';
            description = ''
              Single files by URL (GGUF and other one-file weights), each pinned
              by its own hash and laid out flat in one directory. Each file is
              a `fetchurl`; `passthru.file` is the main file's path.
            '';
          };
          git-lfs = mkOption {
            type = types.nullOr (gitLfsSource config.name);
            default = null;
            example = literalExpression ''
              {
                url = "https://gitlab.com/org/model.git";
                rev = "0123456789abcdef0123456789abcdef01234567";
              }
            '';
            description = "Any git repository with LFS files, fetched at a pinned commit (`fetchgit` with `fetchLFS`).";
          };
          s3 = mkOption {
            type = types.nullOr s3Source;
            default = null;
            example = literalExpression ''
              {
                bucket = "my-models";
                prefix = "fine-tuned/llama/";
                region = "eu-west-1";
              }
            '';
            description = ''
              An S3 (or S3-compatible) bucket prefix, copied by the AWS CLI in a
              fixed-output derivation. Credentials come from the builder's
              AWS_* environment (see the documentation).
            '';
          };
        };

        lockFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = literalExpression "./model-repo.lock.json";
          description = ''
            A lock file written by `model-repo lock` / `model-repo update`
            (`model-repo.lock.json`, schemas/lockfile.schema.json). A
            `source.huggingface` model that leaves {option}`source.huggingface.revision`
            unset takes its commit and per-file hashes
            ({option}`source.huggingface.fileHashes`) from the lock file's entry of
            this model's name; its repo, repoType, ref and files/include/exclude
            must match the entry's. Other sources ignore it.
          '';
        };

        hash = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
          apply =
            hash:
            let
              src = config.source;
            in
            checkHash {
              model = config.name;
              inherit hash;
              # source.url files and per-file Hub pins carry their own hashes;
              # checked by the fetcher.
              allowNull = src.url != null || (src.huggingface != null && src.huggingface.fileHashes != { });
              how =
                if src.huggingface != null then
                  "Run `model-repo prefetch ${src.huggingface.repo}${
                    lib.optionalString (src.huggingface.quant != null) ":${src.huggingface.quant}"
                  }` to print it."
                else if src.url != null then
                  "For source.url.url this is the file's own hash: `nix-prefetch-url URL` prints it (`nix hash convert --hash-algo sha256 <it>` gives the sha256-… form), or give files = [ { url; sha256 = \"<64 hex from the Hub>\"; } ]."
                else
                  null;
            };
          description = ''
            SRI hash of the fetched snapshot: the NAR hash of the fixed-output
            derivation's output directory (huggingface, git-lfs, s3).
            `model-repo prefetch ORG/NAME` prints it for Hub repos. For
            `source.url` with one file given by {option}`source.url.url`, the
            hash of that file; with {option}`source.url.files`, leave it unset
            and give each file its hash. `sha256-` or `sha512-` and canonical
            base64 of the exact length (lib/srihash.nix); Nix's `sha256:…` form
            and sha1/md5 are refused with the fix.
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

        # A dataset prepared for the `datasets` library (lib/datasets.nix).
        integration.datasets = {
          enable = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Whether to prepare this dataset (`source.huggingface.repoType =
              "dataset"`) as the `datasets` library's arrow cache and link it into
              `HF_DATASETS_CACHE`, so that `datasets.load_dataset("org/name")` (with
              a config name and split) works offline. Built from the dataset's store
              path with nixpkgs' `python3Packages.datasets` (lib/datasets.nix). With
              several configs prepared, `load_dataset` needs the config name.
            '';
          };
          configs = mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [ "default" ];
            description = "Configs to prepare (default: every config of the dataset card).";
          };
        };

        auth = {
          tokenEnvVar = mkOption {
            type = types.nullOr (types.strMatching "[A-Za-z_][A-Za-z0-9_]*");
            default = null;
            example = "HF_TOKEN";
            description = ''
              Environment variable holding a token for gated or private repos
              (huggingface, url, git-lfs). It is an impure environment variable
              of the fixed-output derivation, so it must be set where the build
              runs: your shell with single-user Nix, the nix-daemon's
              environment on multi-user installs (see the documentation).
            '';
          };
          tokenFile = mkOption {
            type = types.nullOr (types.strMatching "/.*");
            default = null;
            example = "/run/secrets/hf-token";
            description = ''
              Absolute path of a file holding the token, read by the builder at
              build time (a string, never copied into the store). The build
              user must be able to read it, and it must be in
              `extra-sandbox-paths` when the sandbox is on.
            '';
          };
          moduleTokenForEndpoint = mkOption {
            type = types.bool;
            default = false;
            description = ''
              Whether the module-wide token (NixOS:
              `services.model-repo.auth.tokenFile`) is this model's default
              token also when {option}`source.huggingface.endpoint` is not the
              Hub (`https://huggingface.co`). Off: a mirror or another host
              never gets the Hub token unless the model opts in here (or
              sets its own `auth.tokenFile` / `auth.tokenEnvVar`). A token
              sent over plain `http://` to a host other than loopback is an
              evaluation error whatever this says.
            '';
          };
          user = mkOption {
            type = types.strMatching "[^[:space:]]+";
            default = "model-repo";
            description = ''
              Login sent with the token for git basic authentication
              (huggingface, git-lfs). The Hub accepts any; some forges want the
              account name or a fixed word such as `oauth2`.
            '';
          };
          awsProfile = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "models";
            description = ''
              source.s3 only: the AWS CLI profile (`--profile`). Its config and
              credentials files must be readable by the builder
              (`AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE`).
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
    {
      globalValidation ? { },
      globalNetwork ? { },
      # A module-wide token file (NixOS: services.model-repo.auth.tokenFile, seed
      # 000): the default auth.tokenFile of every source.huggingface model that sets
      # neither auth.tokenFile nor auth.tokenEnvVar and fetches from the Hub
      # (endpoint https://huggingface.co, or auth.moduleTokenForEndpoint). null: no default.
      defaultTokenFile ? null,
      # A module-wide lock file: the default lockFile of every model.
      defaultLockFile ? null,
      example ? null,
    }:
    mkOption {
      type = types.attrsOf (
        types.submodule [
          modelModule
          {
            validation = lib.mapAttrs (_: lib.mkDefault) globalValidation;
            network = lib.mapAttrs (_: lib.mkDefault) globalNetwork;
          }
          (
            { config, ... }:
            {
              # Only to the Hub itself, unless the model opts in for its endpoint.
              auth.tokenFile = lib.mkIf (
                defaultTokenFile != null
                && config.source.huggingface != null
                && config.auth.tokenEnvVar == null
                && (
                  lib.removeSuffix "/" config.source.huggingface.endpoint == defaultHubEndpoint
                  || config.auth.moduleTokenForEndpoint
                )
              ) (lib.mkDefault defaultTokenFile);
              lockFile = lib.mkIf (defaultLockFile != null) (lib.mkDefault defaultLockFile);
            }
          )
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
    checkCommit
    checkHash
    pinHint
    gitPinHint
    ;
}
