# System-independent library of model-repo. Functions that build something
# take `pkgs` first: `fetchModel pkgs { … }`, `buildCache pkgs { models = [ … ]; }`.
{ lib }:

let
  naming = import ./naming.nix { inherit lib; };
  options = import ./options.nix { inherit lib; };
  fetch = import ./fetch.nix { inherit lib; };
  cache = import ./cache.nix { inherit lib; };
  manifest = import ./manifest.nix { inherit lib; };
  # GGUF quantization tags: gguf.select { paths; quant; mmproj ? "auto"; },
  # gguf.splitModelRef "ORG/NAME:QUANT" (the rule of activate/gguf.py).
  gguf = import ./gguf.nix { inherit lib; };
in
{
  inherit naming options manifest gguf;
  inherit (naming) envVarName hubFolderName isValidModelName;
  inherit (fetch) fetchModel fetchDataset fetchModelConfig derivedRevision;
  inherit (cache) buildCache;

  # Helpers named as in the user documentation (docs/nix.md).
  integration = {
    # { org; model; repoType ? "model"; } -> "models--ORG--NAME"
    mkCacheName = { org, model, repoType ? "model" }: naming.hubFolderName { repoId = "${org}/${model}"; inherit repoType; };
    # { model | models; cacheDir ? <huggingface_hub's choice>; } -> POSIX shell text
    inherit (cache) mkLinkScript;
    # model -> its store path (a flat directory that from_pretrained loads)
    inherit (cache) getModelPath;
  };
}
