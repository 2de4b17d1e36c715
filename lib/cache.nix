# The hub cache side, without the activator:
#
# buildCache: a read-only hub cache in the store, usable as HF_HUB_CACHE.
#   <out>/models--ORG--NAME/snapshots/<commit> -> <flat store path of the model>
#   <out>/models--ORG--NAME/refs/<ref>         exactly the commit, no newline
#
# mkLinkScript: POSIX shell that puts the same two entries into a writable hub
# cache (a user's ~/.cache/huggingface/hub), atomically and idempotently.
{ lib }:

let
  inherit (lib) escapeShellArg;
  naming = import ./naming.nix { inherit lib; };

  toList = x: if builtins.isList x then x else builtins.attrValues x;

  describe = m: "${m.repoId}@${m.revision}";

  check =
    who: m:
    if !(m ? hfCachePath && m ? revision && m ? ref && m ? repoId) then
      throw "model-repo: ${who} takes what lib.fetchModel / lib.fetchDataset return (with passthru repoId, revision, ref, hfCachePath); got ${
        m.name or "a value without those attributes"
      }."
    else if m.hfCachePath == null then
      throw "model-repo: ${who}: model \"${
        m.modelName or m.name or "?"
      }\" (source.${m.sourceType or "?"}) has no Hugging Face repo id to be linked under; set integration.huggingface.org and integration.huggingface.model on it."
    else if !(naming.isCommit m.revision) then
      throw "model-repo: ${who}: model \"${m.modelName or m.name or "?"}\" has revision \"${toString m.revision}\", not a 40-character commit."
    else
      m;

  # Two entries that write one ref file with different commits conflict.
  conflicts =
    who: entries:
    let
      keyed = map (m: {
        key = "${m.hfCachePath}/refs/${m.ref}";
        inherit m;
      }) entries;
      # By key (groupBy: linear in the number of entries), then in entry order.
      badKeys = lib.filterAttrs (
        _: xs: builtins.any (x: x.m.revision != (builtins.head xs).m.revision) xs
      ) (builtins.groupBy (x: x.key) keyed);
      bad = builtins.filter (x: badKeys ? ${x.key}) keyed;
    in
    if bad == [ ] then
      entries
    else
      throw "model-repo: ${who}: ${
        lib.concatMapStringsSep " and " (x: describe x.m) bad
      } both claim ref \"${(builtins.head bad).m.ref}\" of ${(builtins.head bad).m.hfCachePath}; give one of them another ref.";

  script =
    entries:
    ''
      set -eu
      mkdir -p "$out"
    ''
    + lib.concatMapStrings (
      m:
      let
        repoDir = "$out/" + escapeShellArg m.hfCachePath;
        refFile = "${repoDir}/refs/${escapeShellArg m.ref}";
      in
      ''
        mkdir -p ${repoDir}/snapshots "$(dirname ${refFile})"
        if [ ! -L ${repoDir}/snapshots/${m.revision} ]; then
          ln -s ${escapeShellArg "${m}"} ${repoDir}/snapshots/${m.revision}
        fi
        printf '%s' ${m.revision} > ${refFile}
      ''
    ) entries;

  buildCache =
    pkgs:
    {
      models ? [ ],
      datasets ? [ ],
      name ? "hf-hub-cache",
    }:
    let
      entries = conflicts "buildCache" (map (check "buildCache") (toList models ++ toList datasets));
    in
    pkgs.runCommand name {
      passthru = {
        repoIds = map (m: m.repoId) entries;
      };
    } (script entries);

  # A shell word that the shell expands ($HOME, ${XDG_CACHE_HOME:-…}) but that
  # cannot end the quoting: ", \ and ` are escaped.
  expandable = s: ''"${lib.escape [ "\\" "\"" "`" ] s}"'';

  # huggingface_hub's own order (constants.py): HF_HUB_CACHE,
  # HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub,
  # ~/.cache/huggingface/hub; a leading ~ is expanded.
  defaultHub = ''
    _mr_hub=''${HF_HUB_CACHE:-''${HUGGINGFACE_HUB_CACHE:-}}
    if [ -z "$_mr_hub" ]; then
      if [ -n "''${HF_HOME:-}" ]; then
        _mr_hub=$HF_HOME/hub
      else
        _mr_hub=''${XDG_CACHE_HOME:-$HOME/.cache}/huggingface/hub
      fi
    fi
    case $_mr_hub in
      "~") _mr_hub=$HOME ;;
      "~/"*) _mr_hub=$HOME/''${_mr_hub#"~/"} ;;
    esac
  '';

  # One model: link snapshots/<rev> to its store path and write refs/<ref>.
  # Each step is skipped when already right (a re-run changes nothing), and
  # each change is a rename(2) of a temporary entry made in the repo folder
  # (never inside refs/ or snapshots/, where huggingface_hub would see it):
  # `ln -s` + `mv -T` for the link (`mv -h` on BSD/macOS, whose mv has no -T),
  # `printf '%s'` + `mv` for the ref. A real directory at snapshots/<rev> (the
  # user's own download) is left alone and reported.
  linkFunction = ''
    # rename(2) $1 onto $2 without following $2 if it is a link to a directory.
    _mr_replace() {
      mv -T "$1" "$2" 2>/dev/null || mv -h "$1" "$2"
    }
    _mr_link() {
      _mr_repo=$_mr_hub/$1 _mr_rev=$2 _mr_path=$3 _mr_refname=$4
      _mr_snap=$_mr_repo/snapshots/$_mr_rev
      _mr_ref=$_mr_repo/refs/$_mr_refname
      mkdir -p "$_mr_repo/snapshots" "$(dirname "$_mr_ref")" || return 1
      if [ -L "$_mr_snap" ] && [ "$(readlink "$_mr_snap")" = "$_mr_path" ]; then
        :
      elif [ -e "$_mr_snap" ] && [ ! -L "$_mr_snap" ]; then
        echo "model-repo: $_mr_snap exists and is not a link (your own download?); left alone" >&2
        return 1
      else
        _mr_tmp=$_mr_repo/.model-repo-link.$$
        rm -f "$_mr_tmp" || return 1
        if ! { ln -s "$_mr_path" "$_mr_tmp" && _mr_replace "$_mr_tmp" "$_mr_snap"; }; then
          rm -f "$_mr_tmp"
          echo "model-repo: could not link $_mr_snap" >&2
          return 1
        fi
      fi
      if [ -f "$_mr_ref" ] && [ ! -L "$_mr_ref" ] && [ "$(cat "$_mr_ref"; printf x)" = "''${_mr_rev}x" ]; then
        :
      elif [ -d "$_mr_ref" ] && [ ! -L "$_mr_ref" ]; then
        echo "model-repo: $_mr_ref is a directory; left alone" >&2
        return 1
      else
        _mr_tmp=$_mr_repo/.model-repo-ref.$$
        if ! { printf '%s' "$_mr_rev" > "$_mr_tmp" && _mr_replace "$_mr_tmp" "$_mr_ref"; }; then
          rm -f "$_mr_tmp"
          echo "model-repo: could not write $_mr_ref" >&2
          return 1
        fi
      fi
    }
  '';

  # mkLinkScript { model = m; } or { models = [ … ]; }, optional cacheDir
  # (shell text, expanded when the script runs: "$HOME/…" works). Runs in a
  # subshell: safe to paste into a shellHook (no `set -e`, no exit leaks out);
  # its status is non-zero when a model could not be linked.
  # gcRootsDir (shell text, like cacheDir): register an indirect GC root there
  # for each linked model (`nix-store --add-root DIR/<store name> --indirect`),
  # so nix-collect-garbage keeps what the cache links; the script never removes
  # links, so it never removes roots either (rm the root to let a model go).
  mkLinkScript =
    {
      model ? null,
      models ? [ ],
      cacheDir ? null,
      gcRootsDir ? null,
    }:
    let
      who = "integration.mkLinkScript";
      all = lib.optional (model != null) model ++ toList models;
      entries = conflicts who (map (check who) all);
    in
    if all == [ ] then
      throw "model-repo: ${who}: give model = <what fetchModel returned> (or models = [ … ])."
    else
      ''
        (
        ${if cacheDir == null then defaultHub else "_mr_hub=${expandable cacheDir}"}
        ${linkFunction}
        _mr_status=0
        ${lib.optionalString (gcRootsDir != null) ''
          _mr_roots=${expandable gcRootsDir}
          # Root $1 (a store path) once: an existing root that names it is kept.
          _mr_root() {
            _mr_rootlink=$_mr_roots/''${1##*/}
            if [ -L "$_mr_rootlink" ] && [ "$(readlink "$_mr_rootlink")" = "$1" ]; then
              return 0
            fi
            if ! command -v nix-store >/dev/null 2>&1; then
              echo "model-repo: nix-store not found: no GC root for $1" >&2
              return 1
            fi
            mkdir -p "$_mr_roots" && nix-store --realise "$1" --add-root "$_mr_rootlink" --indirect >/dev/null
          }
        ''}
        ${lib.concatMapStrings (
          m:
          "_mr_link ${escapeShellArg m.hfCachePath} ${m.revision} ${escapeShellArg "${m}"} ${escapeShellArg m.ref} "
          + lib.optionalString (gcRootsDir != null) "&& _mr_root ${escapeShellArg "${m}"} "
          + "|| _mr_status=1\n"
        ) entries}
        exit $_mr_status
        )
      '';

  getModelPath = m: "${m}";
in
{
  inherit buildCache mkLinkScript getModelPath;
}
