# buildCache: a read-only hub cache in the store, usable as HF_HUB_CACHE.
#
#   <out>/models--ORG--NAME/snapshots/<commit> -> <flat store path of the model>
#   <out>/models--ORG--NAME/refs/<ref>         exactly the commit, no newline
{ lib }:

let
  inherit (lib) escapeShellArg;

  toList = x: if builtins.isList x then x else builtins.attrValues x;

  describe = m: "${m.repoId}@${m.revision}";

  check =
    m:
    if m ? hfCachePath && m ? revision && m ? ref && m ? repoId then
      m
    else
      throw "model-repo: buildCache takes what lib.fetchModel / lib.fetchDataset return (with passthru repoId, revision, ref, hfCachePath); got ${
        m.name or "a value without those attributes"
      }.";

  # Two entries that write one ref file with different commits conflict.
  conflicts =
    entries:
    let
      keyed = map (m: {
        key = "${m.hfCachePath}/refs/${m.ref}";
        inherit m;
      }) entries;
      bad = builtins.filter (
        a: builtins.any (b: a.key == b.key && a.m.revision != b.m.revision) keyed
      ) keyed;
    in
    if bad == [ ] then
      entries
    else
      throw "model-repo: buildCache: ${
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
      entries = conflicts (map check (toList models ++ toList datasets));
    in
    pkgs.runCommand name {
      passthru = {
        repoIds = map (m: m.repoId) entries;
      };
    } (script entries);
in
{
  inherit buildCache;
}
