# source.url: single files by URL, one fixed-output fetchurl per file (its own
# flat hash) and a linkFarm directory of them.
{ lib }:

let
  common = import ./common.nix { inherit lib; };
  inherit (common)
    fail
    storeSafe
    networkCurlOpts
    bearerAuth
    ;
  naming = import ../naming.nix { inherit lib; };

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
                fail cfg "${what} (${name}): hash ${builtins.toJSON f.hash} ${naming.sriHashError f.hash}: it must be an SRI hash such as \"sha256-<base64>\" (for the 64 hex characters the Hub shows, use sha256 = \"…\")."
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
      # groupBy, not a count per name: linear in the number of files.
      dups = builtins.attrNames (lib.filterAttrs (_: xs: builtins.length xs > 1) (builtins.groupBy (x: x) names));
      mains = builtins.filter (f: f.main) files;
      byName = lib.genAttrs names (_: true);
      missing = builtins.filter (r: !(byName ? ${r})) cfg.validation.requiredFiles;
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

  fetchUrlFile =
    pkgs: cfg: f:
    pkgs.fetchurl (
      {
        name = storeSafe (builtins.baseNameOf f.name);
      }
      // (if builtins.length f.urls == 1 then { url = builtins.head f.urls; } else { inherit (f) urls; })
      // f.hashArgs
      // networkCurlOpts cfg
      // bearerAuth cfg "source.url" f.urls
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
      # name -> its fetchurl (names are unique, checked above): an attribute
      # set for linkFarm, which folds a list with `//` (quadratic).
      files = lib.listToAttrs (
        map (f: {
          inherit (f) name;
          value = fetchUrlFile pkgs cfg f;
        }) checked.files
      );
      dir = pkgs.linkFarm (storeSafe "url-${cfg.name}") files;
    in
    {
      drv = dir;
      extra = {
        file = "${dir}/${checked.main.name}";
        mainFile = checked.main.name;
        inherit files;
      };
    };

in
{
  inherit
    urlFiles
    fetchUrl
    ;
}
