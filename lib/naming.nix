# Naming rules shared by the library, the three modules and the activator.
#
# These must stay byte-for-byte equal to the Python rules in activate/naming.py;
# tests/test_nix_naming.py compares both on generated names.
{ lib }:

let
  inherit (builtins) match replaceStrings concatStringsSep;

  # Model names: the key of the manifest and the suffix of MODEL_REPO_<NAME>.
  modelNameRegex = "[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}";
  modelNameRule = "^${modelNameRegex}$";

  isValidModelName = name: builtins.isString name && match modelNameRegex name != null;

  # One ASCII character at a time: a-z is upper-cased, anything outside
  # A-Z 0-9 _ becomes "_". lib.toUpper only maps ASCII letters.
  envVarChar = c: if match "[A-Z0-9_]" c != null then c else "_";

  envVarName =
    name: "MODEL_REPO_" + concatStringsSep "" (map envVarChar (lib.stringToCharacters (lib.toUpper name)));

  # MODEL_REPO_<NAME>_FILE: the variable of a model's one file (activate/naming.py
  # file_var_name; the modules and the activator print it).
  fileVarName = name: envVarName name + "_FILE";

  # Hub cache folder of a repo: models--ORG--NAME / datasets--ORG--NAME.
  repoTypePrefix =
    repoType:
    if repoType == "model" then
      "models"
    else if repoType == "dataset" then
      "datasets"
    else
      throw "model-repo: repo type must be \"model\" or \"dataset\", got \"${toString repoType}\"";

  hubFolderName =
    { repoId, repoType ? "model" }: "${repoTypePrefix repoType}--${replaceStrings [ "/" ] [ "--" ] repoId}";

  # Repo ids as the Hub accepts them: ORG/NAME, word characters, "-" and ".",
  # no "--" or ".." (huggingface_hub's validate_repo_id), not ending in ".git".
  repoIdRegex = "[A-Za-z0-9_.-]{1,96}/[A-Za-z0-9_.-]{1,96}";
  isValidRepoId =
    repoId:
    builtins.isString repoId
    && match repoIdRegex repoId != null
    && match ".*(--|\\.\\.).*" repoId == null
    && !(lib.hasSuffix ".git" repoId)
    && match "[.-].*|.*[.-]|.*/[.-].*|.*[.-]/.*" repoId == null;

  commitRegex = "[0-9a-f]{40}";
  isCommit = rev: builtins.isString rev && match commitRegex rev != null;

  # The SRI hash rule (lib/srihash.nix, the same as activate/srihash.py).
  inherit (import ./srihash.nix { inherit lib; }) sriHashError isSriHash;

  # The Hub's git URL of a repo: datasets live under /datasets/.
  hubGitUrl =
    { repoId, repoType ? "model" }:
    if repoType == "dataset" then "https://huggingface.co/datasets/${repoId}" else "https://huggingface.co/${repoId}";
in
{
  inherit
    modelNameRegex
    modelNameRule
    isValidModelName
    envVarName
    fileVarName
    hubFolderName
    repoTypePrefix
    repoIdRegex
    isValidRepoId
    commitRegex
    isCommit
    sriHashError
    isSriHash
    hubGitUrl
    ;
}
