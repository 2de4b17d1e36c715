# source.s3: an S3 prefix copied by the AWS CLI into one fixed-output
# derivation (NAR hash).
{ lib }:

let
  common = import ./common.nix { inherit lib; };
  inherit (common)
    fail
    say
    storeSafe
    requiredFilesCheck
    ;
  inherit (lib) escapeShellArg escapeShellArgs;

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

in
{
  inherit
    awsImpureEnvVars
    fetchS3
    ;
}
