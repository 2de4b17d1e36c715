# Helpers every fetcher of lib/fetchers/ shares: errors, sparse-checkout
# patterns, authentication (netrc for git, a bearer header for fetchurl),
# requiredFiles checks, network options for curl.
{ lib }:

let
  inherit (lib) escapeShellArg;

  fail = cfg: msg: throw "model-repo: model \"${cfg.name}\": ${msg}";

  # A line of shell printing `msg` to stderr, whatever characters it holds.
  say = msg: "printf '%s\\n' ${escapeShellArg msg} >&2";

  storeSafe = lib.strings.sanitizeDerivationName;

  # The sparse-checkout pattern selecting exactly one file: anchored with "/",
  # git's glob characters \ * ? [ escaped with a backslash, a trailing space
  # escaped (gitignore(5) "PATTERN FORMAT"). Same as exact_pattern in
  # activate/hub/sparse.py.
  exactPattern =
    f:
    let
      rel = lib.removePrefix "/" f;
      escaped = builtins.replaceStrings [ "\\" "*" "?" "[" ] [ "\\\\" "\\*" "\\?" "\\[" ] rel;
    in
    "/" + (if lib.hasSuffix " " escaped then lib.removeSuffix " " escaped + "\\ " else escaped);

  # Sparse-checkout patterns (non-cone mode) from files/include/exclude: the
  # files as exact patterns, then include ([ "/*" ] when both are empty), then
  # each exclude negated with "!". Same as sparse_patterns in activate/hub/sparse.py.
  sparsePatterns =
    src:
    let
      wanted = map exactPattern src.files ++ src.include;
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

  # { scheme; host; } of a URL (both lower-cased; an IPv6 host keeps its
  # brackets), or null when it is not scheme://host....
  urlParts =
    url:
    let
      m = builtins.match "([A-Za-z][A-Za-z0-9+.-]*)://([^/?#@]*@)?(\\[[^]/]*]|[^]/?#:[]*).*" url;
    in
    if m == null then
      null
    else
      {
        scheme = lib.toLower (builtins.elemAt m 0);
        host = lib.toLower (builtins.elemAt m 2);
      };

  # Loopback: localhost (and *.localhost, RFC 6761), 127.0.0.0/8, [::1].
  isLoopback =
    host:
    host == "localhost"
    || lib.hasSuffix ".localhost" host
    || builtins.match "127\\.[0-9]+\\.[0-9]+\\.[0-9]+" host != null
    || host == "[::1]";

  # The model's token options as set, for messages.
  tokenOptions =
    cfg:
    if cfg.auth.tokenFile != null then
      "auth.tokenFile = \"${cfg.auth.tokenFile}\" (a model's own, or the module-wide services.model-repo.auth.tokenFile)"
    else
      "auth.tokenEnvVar = \"${cfg.auth.tokenEnvVar}\"";

  # A token never goes over plain http:// to a host other than loopback (where
  # anyone on the path reads it): an evaluation error naming the option that
  # gives the URL and the fix. `option`: that option's name; true when fine.
  checkTokenTransport =
    cfg: option: url:
    let
      p = urlParts url;
    in
    if !(hasToken cfg) || p == null || p.scheme != "http" || isLoopback p.host then
      true
    else
      fail cfg "${tokenOptions cfg} would send a token over plain http:// to ${p.host} (${option} = \"${url}\"): use an https:// URL there, or give this model no token (a model with another endpoint than the Hub gets the module-wide one only with auth.moduleTokenForEndpoint = true).";

  # git basic auth: a netrc for the repository's host (git and git-lfs read
  # it through fetchgit's netrcPhase, which exports NETRC and HOME).
  #   url, option: the repository's URL and the option giving it (checked by
  #   checkTokenTransport).
  gitNetrc =
    cfg: host: option: url:
    assert checkTokenTransport cfg option url;
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
  #   option, urls: the option giving the URLs, and the URLs the header goes
  #   to (checked by checkTokenTransport).
  bearerAuth =
    cfg: option: urls:
    assert builtins.all (checkTokenTransport cfg option) urls;
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

in
{
  inherit
    fail
    say
    storeSafe
    exactPattern
    sparsePatterns
    sparseArgs
    checkAuth
    readToken
    hasToken
    impureTokenVar
    urlHost
    urlParts
    isLoopback
    checkTokenTransport
    gitNetrc
    bearerAuth
    requiredFilesCheck
    networkCurlOpts
    ;
}
