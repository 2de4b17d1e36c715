# Fetchers: a model's options -> a store path holding its files as a flat
# directory (no blobs/, no snapshots/), with passthru attributes describing it.
#
#   huggingface  fetchFromHuggingFace, else fetchgit + LFS    one FOD, NAR hash
#   git-lfs      fetchgit + LFS at a commit                    one FOD, NAR hash
#   url          one fetchurl per file (its own flat hash)     + linkFarm directory
#   s3           aws s3 cp --recursive                         one FOD, NAR hash
{ lib }:

let
  naming = import ./naming.nix { inherit lib; };
  options = import ./options.nix { inherit lib; };
  inherit (lib) escapeShellArg escapeShellArgs;

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

  fail = cfg: msg: throw "model-repo: model \"${cfg.name}\": ${msg}";

  # A line of shell printing `msg` to stderr, whatever characters it holds.
  say = msg: "printf '%s\\n' ${escapeShellArg msg} >&2";

  storeSafe = lib.strings.sanitizeDerivationName;

  # The revision a model without a commit of its own (url, s3) is linked under:
  # sha1 of what pins its content, the model's SRI hash or, for url sources, each
  # file's name and hash. It changes when the content does, never with nixpkgs
  # (a url model's directory is a linkFarm whose store path follows stdenv).
  derivedRevision =
    cfg:
    builtins.hashString "sha1" (
      if cfg.source.url != null then
        lib.concatMapStringsSep "\n" (f: "${f.name} ${builtins.toJSON f.hashArgs}") (urlFiles cfg).files
      else
        toString cfg.hash
    );

  # Sparse-checkout patterns (non-cone mode) from files/include/exclude.
  sparsePatterns =
    src:
    let
      wanted = map (f: "/" + lib.removePrefix "/" f) src.files ++ src.include;
    in
    if wanted == [ ] && src.exclude == [ ] then
      [ ]
    else
      (if wanted == [ ] then [ "/*" ] else wanted) ++ map (p: "!" + p) src.exclude;

  sparseArgs =
    src:
    let
      sparse = sparsePatterns src;
    in
    lib.optionalAttrs (sparse != [ ]) {
      sparseCheckout = sparse;
      nonConeMode = true;
    };

  ## Authentication ##########################################################

  # Which auth options make sense for which source; anything else is an error
  # rather than a silently ignored setting.
  checkAuth =
    cfg: s:
    let
      a = cfg.auth;
      token = a.tokenEnvVar != null || a.tokenFile != null;
    in
    if a.tokenEnvVar != null && a.tokenFile != null then
      fail cfg "set one of auth.tokenEnvVar and auth.tokenFile, not both."
    else if s == "s3" && token then
      fail cfg "auth.tokenEnvVar / auth.tokenFile do not apply to source.s3: the AWS CLI takes its credentials from the builder's AWS_* environment variables, or from auth.awsProfile."
    else if s != "s3" && a.awsProfile != null then
      fail cfg "auth.awsProfile applies to source.s3 only."
    else
      true;

  # Shell (POSIX, runs inside the fetcher's netrcPhase, before the download)
  # that puts the token into $_mr_token or fails the build saying why.
  readToken =
    cfg:
    let
      a = cfg.auth;
    in
    if a.tokenFile != null then
      ''
        if [ ! -r ${escapeShellArg a.tokenFile} ]; then
          ${say "model-repo: model ${cfg.name}: auth.tokenFile ${a.tokenFile} is not readable by the builder (it must be readable by the build users, and listed in extra-sandbox-paths when the sandbox is on)"}
          exit 1
        fi
        _mr_token=$(tr -d '\r\n' < ${escapeShellArg a.tokenFile})
        if [ -z "$_mr_token" ]; then
          ${say "model-repo: model ${cfg.name}: auth.tokenFile ${a.tokenFile} is empty"}
          exit 1
        fi
      ''
    else
      ''
        _mr_token=''${${a.tokenEnvVar}:-}
        if [ -z "$_mr_token" ]; then
          ${say "model-repo: model ${cfg.name}: auth.tokenEnvVar ${a.tokenEnvVar} is empty or unset in the builder's environment (with a nix-daemon, the daemon's environment; see the model-repo docs)"}
          exit 1
        fi
      '';

  hasToken = cfg: cfg.auth.tokenEnvVar != null || cfg.auth.tokenFile != null;

  impureTokenVar = cfg: lib.optionalAttrs (cfg.auth.tokenEnvVar != null) {
    netrcImpureEnvVars = [ cfg.auth.tokenEnvVar ];
  };

  # Host of an http(s) URL, or null.
  urlHost =
    url:
    let
      m = builtins.match "[Hh][Tt][Tt][Pp][Ss]?://([^/@]*@)?([^/:?#]+).*" url;
    in
    if m == null then null else builtins.elemAt m 1;

  # git basic auth: a netrc for the repository's host (git and git-lfs read
  # it through fetchgit's netrcPhase, which exports NETRC and HOME).
  gitNetrc =
    cfg: host:
    lib.optionalAttrs (hasToken cfg) (
      {
        netrcPhase = ''
          ${readToken cfg}
          ( umask 077; printf 'machine %s login %s password %s\n' ${escapeShellArg host} ${escapeShellArg cfg.auth.user} "$_mr_token" > netrc )
          unset _mr_token
        '';
      }
      // impureTokenVar cfg
    );

  # HTTP bearer auth for fetchurl: `Authorization: Bearer <token>` (what the
  # Hub documents for downloads) from a header file, never on the command
  # line. curl (>= 7.58) does not send a custom Authorization header on to
  # another host after a redirect (the Hub redirects LFS files to a CDN with
  # signed URLs). The header goes with every request of this fetchurl, so the
  # content-addressed mirrors it falls back to (tarballs.nixos.org) are
  # switched off: fetchurl's builder uses NIX_HASHED_MIRRORS instead of its
  # list when it is non-empty, and a lone space names no mirror at all.
  # With netrcPhase set, fetchurl verifies TLS certificates and passes
  # --netrc-file netrc to curl: it gets an empty one.
  bearerAuth =
    cfg:
    lib.optionalAttrs (hasToken cfg) (
      {
        netrcPhase = ''
          ${readToken cfg}
          : > netrc
          ( umask 077; printf 'Authorization: Bearer %s\n' "$_mr_token" > "$PWD/model-repo-auth-header" )
          unset _mr_token
          curlOpts="''${curlOpts:-} --header @$PWD/model-repo-auth-header"
          NIX_HASHED_MIRRORS=' '
        '';
      }
      // impureTokenVar cfg
    );

  requiredFilesCheck =
    cfg:
    lib.concatMapStrings (f: ''
      if [ ! -e "$out"/${escapeShellArg f} ]; then
        ${say "model-repo: model ${cfg.name}: validation.requiredFiles: ${f} is missing from the snapshot"}
        exit 1
      fi
    '') cfg.validation.requiredFiles;

  ## Passthru ################################################################

  # The repo id a model is linked under in a hub cache; the same rules as
  # lib/manifest.nix's mkEntry. null: not linkable (a non-Hub source without
  # integration.huggingface.{org,model}).
  linkRepo =
    cfg: s:
    let
      hfInt = cfg.integration.huggingface;
    in
    if s == "huggingface" then
      let
        parts = lib.splitString "/" cfg.source.huggingface.repo;
      in
      {
        org = if hfInt.org != null then hfInt.org else builtins.elemAt parts 0;
        model = if hfInt.model != null then hfInt.model else builtins.elemAt parts 1;
        repoType = cfg.source.huggingface.repoType;
      }
    else if hfInt.enable && hfInt.org != null && hfInt.model != null then
      {
        inherit (hfInt) org model;
        repoType = "model";
      }
    else
      null;

  # drv // passthru attributes (also as drv.passthru), for every source type.
  withPassthru =
    cfg: s: drv: extra:
    let
      link = linkRepo cfg s;
      repoId = if link == null then null else "${link.org}/${link.model}";
      attrs = {
        inherit repoId;
        org = link.org or null;
        model = link.model or null;
        repoType = link.repoType or "model";
        revision =
          if s == "huggingface" then
            cfg.source.huggingface.revision
          else if s == "git-lfs" then
            cfg.source.git-lfs.rev
          else
            derivedRevision cfg;
        ref = if s == "huggingface" then cfg.source.huggingface.ref else "main";
        sourceType = s;
        hfCachePath =
          if link == null then
            null
          else
            naming.hubFolderName {
              inherit repoId;
              inherit (link) repoType;
            };
        modelName = cfg.name;
        modelMeta = cfg.meta;
      }
      // extra;
    in
    drv // attrs // { passthru = (drv.passthru or { }) // attrs; };

  ## huggingface #############################################################

  hfStoreName =
    hf: "hf-" + builtins.replaceStrings [ "/" ] [ "--" ] hf.repo + "-" + builtins.substring 0 12 hf.revision;

  # Use nixpkgs' own fetchFromHuggingFace when it exists and takes the
  # arguments we need (a `name`, so `model-repo prefetch --add-to-store` gives the
  # same store path); otherwise fetchgit with LFS. Sparse patterns always go through
  # fetchgit: our include/exclude are non-cone patterns ("!x" excludes), which
  # fetchFromHuggingFace's checkout mode may read differently.
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
    && has "name"
    && sparsePatterns cfg.source.huggingface == [ ]
    && !(hasToken cfg)
    && cfg.validation.requiredFiles == [ ];

  fetchHuggingface =
    pkgs: cfg:
    let
      hf = cfg.source.huggingface;
      parts = lib.splitString "/" hf.repo;
      sparse = sparsePatterns hf;
    in
    if canUseHfFetcher pkgs cfg then
      pkgs.fetchFromHuggingFace (
        {
          owner = builtins.elemAt parts 0;
          repo = builtins.elemAt parts 1;
          rev = hf.revision;
          name = hfStoreName hf;
          inherit (cfg) hash;
        }
        // lib.optionalAttrs (hf.repoType != "model") { inherit (hf) repoType; }
      )
    else
      pkgs.fetchgit (
        {
          name = hfStoreName hf;
          url = naming.hubGitUrl {
            repoId = hf.repo;
            inherit (hf) repoType;
          };
          rev = hf.revision;
          inherit (cfg) hash;
          fetchLFS = true;
        }
        // sparseArgs hf
        // lib.optionalAttrs (cfg.validation.requiredFiles != [ ]) { postFetch = requiredFilesCheck cfg; }
        // gitNetrc cfg "huggingface.co"
      );

  ## git-lfs #################################################################

  fetchGitLfs =
    pkgs: cfg:
    let
      g = cfg.source.git-lfs;
      host = urlHost g.url;
      base = lib.removeSuffix ".git" (builtins.baseNameOf (lib.removeSuffix "/" g.url));
    in
    if hasToken cfg && host == null then
      fail cfg "auth with source.git-lfs needs an http(s) URL (the token is sent as git basic auth through a netrc); got \"${g.url}\"."
    else
      lib.warnIf (cfg.network.timeout != null || cfg.network.retries != null)
        "model-repo: model \"${cfg.name}\": network.timeout / network.retries are not used by the git fetcher of source.git-lfs."
      pkgs.fetchgit (
        {
          name = storeSafe "git-${base}-${builtins.substring 0 12 g.rev}";
          inherit (g) url rev;
          inherit (cfg) hash;
          fetchLFS = true;
        }
        // sparseArgs g
        // lib.optionalAttrs (cfg.validation.requiredFiles != [ ]) { postFetch = requiredFilesCheck cfg; }
        // gitNetrc cfg host
      );

  ## url #####################################################################

  fileNameRegex = "[A-Za-z0-9._+=@,~-]+(/[A-Za-z0-9._+=@,~-]+)*";
  isFileName = n: builtins.match fileNameRegex n != null && builtins.match "(.*/)?\\.\\.?(/.*)?" n == null;

  # The file name a URL gives: its last path segment, without query/fragment.
  urlFileName = url: lib.last (lib.splitString "/" (builtins.head (builtins.split "[?#]" url)));

  # source.url -> a list of checked files { name; urls; hashArgs; main; }.
  urlFiles =
    cfg:
    let
      u = cfg.source.url;
      single = u.url != null || u.urls != [ ];
      raw =
        if single && u.files != [ ] then
          fail cfg "source.url: use either url/urls/name (one file, hashed by the model's hash) or files, not both."
        else if single then
          [
            {
              inherit (u) url urls name;
              hash = null;
              sha256 = null;
              main = true;
            }
          ]
        else
          u.files;
      n = builtins.length raw;
      modelHash = cfg.hash;

      checkOne =
        i: f:
        let
          what = "source.url" + (if single then "" else ".files #${toString (i + 1)}");
          urls =
            if f.url != null && f.urls != [ ] then
              fail cfg "${what}: set url or urls, not both."
            else if f.url != null then
              [ f.url ]
            else if f.urls != [ ] then
              f.urls
            else
              fail cfg "${what}: no url.";
          name = if f.name != null then f.name else urlFileName (builtins.head urls);
          hashArgs =
            if f.hash != null && f.sha256 != null then
              fail cfg "${what} (${name}): set hash or sha256, not both."
            else if f.hash != null then
              if naming.isSriHash f.hash then
                { inherit (f) hash; }
              else
                fail cfg "${what} (${name}): hash must be an SRI hash such as \"sha256-<base64>\", got \"${f.hash}\" (for the 64 hex characters the Hub shows, use sha256 = \"…\")."
            else if f.sha256 != null then
              if builtins.match "[0-9a-fA-F]{64}" f.sha256 != null then
                { sha256 = lib.toLower f.sha256; }
              else
                fail cfg "${what} (${name}): sha256 must be 64 hex characters, got \"${f.sha256}\"."
            else if modelHash != null && n == 1 then
              { hash = modelHash; }
            else if single then
              fail cfg "${what} (${name}): no hash. Set the model's hash = \"sha256-…\" (the file's own hash), or use files = [ { url = …; sha256 = \"<64 hex>\"; } ] with the SHA-256 the Hub lists."
            else
              fail cfg "${what} (${name}): no hash. Give each file hash = \"sha256-…\" (or sha256 = \"<64 hex>\", as the Hub lists it); only a single-file source.url may use the model's hash instead.";
        in
        if !(isFileName name) then
          fail cfg "${what}: \"${name}\" is not usable as a file name (letters, digits, ._+=@,~- and \"/\" between segments; no \".\" or \"..\" segments); set name = \"…\"."
        else
          {
            inherit name urls hashArgs;
            inherit (f) main;
          };

      files = lib.imap0 checkOne raw;
      names = map (f: f.name) files;
      dups = lib.unique (builtins.filter (x: lib.count (y: y == x) names > 1) names);
      mains = builtins.filter (f: f.main) files;
      missing = builtins.filter (r: !(builtins.elem r names)) cfg.validation.requiredFiles;
    in
    if raw == [ ] then
      fail cfg "source.url has no files: set source.url.url = \"https://…\" (one file, hashed by the model's hash) or source.url.files = [ { url = \"https://…\"; hash = \"sha256-…\"; } … ]."
    else if modelHash != null && n > 1 then
      fail cfg "hash is set, but source.url has ${toString n} files: each file carries its own hash, and the directory holding them is built from those (no hash of its own). Remove hash, and give every file hash or sha256."
    else if dups != [ ] then
      fail cfg "source.url: several files are named ${lib.concatMapStringsSep ", " (d: "\"${d}\"") dups}; set name on them."
    else if builtins.length mains > 1 then
      fail cfg "source.url: only one file can be main = true (${lib.concatMapStringsSep ", " (f: f.name) mains})."
    else if missing != [ ] then
      fail cfg "validation.requiredFiles: ${lib.concatStringsSep ", " missing} ${
        if builtins.length missing == 1 then "is" else "are"
      } not among the files of source.url (${lib.concatStringsSep ", " names})."
    else
      {
        inherit files;
        main = if mains != [ ] then builtins.head mains else builtins.head files;
      };

  networkCurlOpts =
    cfg:
    let
      n = cfg.network;
      opts =
        lib.optionals (n.timeout != null) [ "--connect-timeout" (toString n.timeout) ]
        ++ lib.optionals (n.retries != null) [ "--retry" (toString n.retries) ];
    in
    # Integers only, so the word-split curlOpts of every fetchurl version is safe.
    lib.optionalAttrs (opts != [ ]) { curlOpts = lib.concatStringsSep " " opts; };

  fetchUrlFile =
    pkgs: cfg: f:
    pkgs.fetchurl (
      {
        name = storeSafe (builtins.baseNameOf f.name);
      }
      // (if builtins.length f.urls == 1 then { url = builtins.head f.urls; } else { inherit (f) urls; })
      // f.hashArgs
      // networkCurlOpts cfg
      // bearerAuth cfg
    );

  # Each file is its own fixed-output fetchurl (a flat hash: what the Hub
  # lists, what sha256sum prints), so a file shared by two models or two
  # versions is stored and downloaded once. The directory is a linkFarm of
  # them: input-addressed, determined by the files' hashes, and no copy of
  # multi-gigabyte weights. (A fixed-output directory could not hold links to
  # other store paths, and a copy would store every file twice.)
  fetchUrl =
    pkgs: cfg:
    let
      checked = urlFiles cfg;
      fetched = map (f: f // { drv = fetchUrlFile pkgs cfg f; }) checked.files;
      dir = pkgs.linkFarm (storeSafe "url-${cfg.name}") (
        map (f: {
          inherit (f) name;
          path = f.drv;
        }) fetched
      );
    in
    {
      drv = dir;
      extra = {
        file = "${dir}/${checked.main.name}";
        mainFile = checked.main.name;
        files = lib.listToAttrs (
          map (f: {
            inherit (f) name;
            value = f.drv;
          }) fetched
        );
      };
    };

  ## s3 ######################################################################

  # Credentials and settings the AWS CLI reads from its environment. With a
  # nix-daemon they come from the daemon's environment.
  awsImpureEnvVars = [
    "AWS_ACCESS_KEY_ID"
    "AWS_SECRET_ACCESS_KEY"
    "AWS_SESSION_TOKEN"
    "AWS_PROFILE"
    "AWS_REGION"
    "AWS_DEFAULT_REGION"
    "AWS_CONFIG_FILE"
    "AWS_SHARED_CREDENTIALS_FILE"
    "AWS_ENDPOINT_URL"
    "AWS_ENDPOINT_URL_S3"
    "AWS_CA_BUNDLE"
    "AWS_ROLE_ARN"
    "AWS_WEB_IDENTITY_TOKEN_FILE"
  ];

  proxyImpureEnvVars =
    lib.fetchers.proxyImpureEnvVars or [
      "http_proxy"
      "https_proxy"
      "ftp_proxy"
      "all_proxy"
      "no_proxy"
      "HTTP_PROXY"
      "HTTPS_PROXY"
      "FTP_PROXY"
      "ALL_PROXY"
      "NO_PROXY"
    ];

  s3Prefix =
    p:
    let
      trimmed = lib.removePrefix "/" p;
    in
    if trimmed == "" || lib.hasSuffix "/" trimmed then trimmed else trimmed + "/";

  fetchS3 =
    pkgs: cfg:
    let
      s = cfg.source.s3;
      src = "s3://${s.bucket}/${s3Prefix s.prefix}";
      awscli = pkgs.awscli2 or pkgs.awscli or (fail cfg "source.s3 needs pkgs.awscli2 (or pkgs.awscli), which this package set does not have.");
      net = cfg.network;
      filters =
        lib.optionals (s.include != [ ]) ([ "--exclude" "*" ] ++ lib.concatMap (p: [ "--include" p ]) s.include)
        ++ lib.concatMap (p: [ "--exclude" p ]) s.exclude;
      flags =
        [
          "--recursive"
          "--no-progress"
          "--only-show-errors"
        ]
        ++ lib.optionals (s.region != null) [ "--region" s.region ]
        ++ lib.optionals (s.endpoint != null) [ "--endpoint-url" s.endpoint ]
        ++ lib.optional s.anonymous "--no-sign-request"
        ++ lib.optionals (cfg.auth.awsProfile != null) [ "--profile" cfg.auth.awsProfile ]
        ++ lib.optionals (net.timeout != null) [ "--cli-connect-timeout" (toString net.timeout) ]
        ++ filters;
    in
    pkgs.runCommand (storeSafe "s3-${s.bucket}-${s3Prefix s.prefix}") (
      {
        nativeBuildInputs = [ awscli ];
        outputHash = cfg.hash;
        outputHashMode = "recursive";
        impureEnvVars = proxyImpureEnvVars ++ awsImpureEnvVars;
        preferLocalBuild = true;
        # Used when AWS_CA_BUNDLE is not given by the caller.
        caBundle = "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt";
      }
      // lib.optionalAttrs (net.retries != null) {
        AWS_MAX_ATTEMPTS = toString (net.retries + 1);
        AWS_RETRY_MODE = "standard";
      }
    ) ''
      # Impure variables the caller does not set arrive as empty strings; the
      # AWS CLI would take an empty AWS_PROFILE for a profile name.
      for _mr_v in ${lib.concatStringsSep " " awsImpureEnvVars}; do
        eval "_mr_val=\''${$_mr_v:-}"
        if [ -z "$_mr_val" ]; then unset "$_mr_v"; fi
      done
      if [ -z "''${AWS_CA_BUNDLE:-}" ]; then export AWS_CA_BUNDLE="$caBundle"; fi
      export HOME="$TMPDIR"
      aws s3 cp ${escapeShellArg src} "$out" ${escapeShellArgs flags}
      if [ ! -d "$out" ]; then
        ${say "model-repo: model ${cfg.name}: no objects under ${src}"}
        exit 1
      fi
      ${requiredFilesCheck cfg}
    '';

  ## Entry points ############################################################

  # A model's evaluated options -> its store path (a derivation).
  fetchModelConfig =
    pkgs: cfg:
    let
      s = sourceType cfg;
      authOk = checkAuth cfg s;
    in
    assert authOk;
    if s == "huggingface" then
      withPassthru cfg s (fetchHuggingface pkgs cfg) { }
    else if s == "git-lfs" then
      withPassthru cfg s (fetchGitLfs pkgs cfg) { }
    else if s == "s3" then
      withPassthru cfg s (fetchS3 pkgs cfg) { }
    else
      let
        r = fetchUrl pkgs cfg;
      in
      withPassthru cfg s r.drv r.extra;

  fetchModel = pkgs: args: fetchModelConfig pkgs (options.evalModel args);

  # Same as fetchModel, with the repo type forced to "dataset".
  fetchDataset =
    pkgs: args:
    if args ? source.huggingface then
      fetchModel pkgs (lib.recursiveUpdate args { source.huggingface.repoType = "dataset"; })
    else
      throw "model-repo: fetchDataset ${
        args.name or ""
      }: only source.huggingface has a repo type; models from source.url, source.git-lfs and source.s3 are linked as models (use fetchModel).";
in
{
  inherit
    sourceType
    sparsePatterns
    derivedRevision
    awsImpureEnvVars
    fetchModelConfig
    fetchModel
    fetchDataset
    ;
}
