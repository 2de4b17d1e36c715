# A dataset prepared for the `datasets` library: its arrow cache, built from the
# dataset's store path by `model-repo prepare-dataset` (activate/datasets_prepare.py)
# with the real `datasets` package, offline. The activator links it into
# HF_DATASETS_CACHE (manifest field `prepared`), where `datasets.load_dataset("org/name")`
# finds it with HF_HUB_OFFLINE=1.
#
#   prepareDataset pkgs {
#     snapshot = <store path or derivation of the dataset repo's files>;
#     repoId = "org/name";
#     revision = "<40-hex commit>";
#     configs = [ ];        # default: every config of the dataset card
#     python = null;        # default: pkgs.python3 with datasets and model-repo
#     package = null;       # the model-repo package (default: lib/package.nix)
#   }
#   -> derivation: $out/<config>/<version>/<commit>/{dataset_info.json,*.arrow}
{ lib }:

let
  naming = import ./naming.nix { inherit lib; };

  # pkgs.python3 with `datasets` and model-repo as a Python module (nixpkgs'
  # python.withPackages and toPythonModule).
  defaultPython =
    pkgs: package:
    let
      mr = if package != null then package else pkgs.callPackage ./package.nix { };
    in
    pkgs.python3.withPackages (ps: [
      ps.datasets
      (ps.toPythonModule mr)
    ]);

  # A store path name from a repo id: "Org/Tiny.Set" -> "Org-Tiny.Set".
  storeName = repoId: builtins.replaceStrings [ "/" ] [ "-" ] repoId;

  prepareDataset =
    pkgs:
    {
      snapshot,
      repoId,
      revision,
      configs ? [ ],
      python ? null,
      package ? null,
    }:
    let
      py = if python != null then python else defaultPython pkgs package;
      bad =
        if builtins.match naming.commitRegex revision == null then
          "revision \"${revision}\" is not a commit: pin the 40-hex commit id"
        else if !(naming.isValidRepoId repoId) then
          "repoId \"${repoId}\" is not a Hub repo id (org/name)"
        else
          null;
      configArgs = lib.concatMapStrings (c: " --config ${lib.escapeShellArg c}") configs;
    in
    if bad != null then
      throw "model-repo prepareDataset: ${bad}"
    else
      pkgs.runCommand "${storeName repoId}-datasets-prepared"
        {
          nativeBuildInputs = [ py ];
          # Offline: the dataset's files come from its store path only.
          HF_HUB_OFFLINE = "1";
          HF_DATASETS_OFFLINE = "1";
          passthru = { inherit repoId revision snapshot; };
        }
        ''
          export HOME="$TMPDIR" HF_HOME="$TMPDIR/hf"
          python -m activate prepare-dataset ${lib.escapeShellArg "${snapshot}"} \
            --repo-id ${lib.escapeShellArg repoId} --revision ${revision} \
            --out "$out"${configArgs}
        '';
in
{
  inherit prepareDataset defaultPython;
}
