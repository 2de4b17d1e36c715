"""Where a token may go (issue 14, finding 1): the module-wide auth.tokenFile reaches the
Hub (https://huggingface.co) only, unless a model opts in for its own endpoint
(auth.moduleTokenForEndpoint); any token over plain http:// to a host other than
loopback is an evaluation error naming the options and the fix."""

from __future__ import annotations

import pytest
from nixeval import HASH, REV, lib_expr, nix_eval, nix_eval_error, nixos_eval


def per_file(repo: str, endpoint: str | None = None, **extra: object) -> str:
    hf = f'repo = "{repo}"; revision = "{REV}"; fileHashes."config.json" = "{HASH}";'
    if endpoint is not None:
        hf += f' endpoint = "{endpoint}";'
    rest = " ".join(f"{k} = {v};" for k, v in extra.items())
    return f"{{ source.huggingface = {{ {hf} }}; {rest} }}"


def test_the_module_token_goes_to_the_hub_only_unless_a_model_opts_in():
    r = nixos_eval(f"""{{
      services.model-repo = {{
        enable = true;
        auth.tokenFile = "/run/secrets/hf-token";
        models.hub = {per_file("org/hub")};
        models.slash = {per_file("org/slash", "https://huggingface.co/")};
        models.mirror = {per_file("org/mirror", "https://mirror.example")};
        models.plain = {per_file("org/plain", "http://mirror.example")};
        models.optin = {per_file("org/optin", "https://mirror.example",
                                 **{"auth.moduleTokenForEndpoint": "true"})};
        models.own = {per_file("org/own", "https://mirror.example",
                               **{"auth.tokenFile": '"/run/secrets/mirror"'})};
      }};
    }}""")
    assert r["tokenFiles"] == {"hub": "/run/secrets/hf-token", "slash": "/run/secrets/hf-token",
                               "mirror": None, "plain": None,
                               "optin": "/run/secrets/hf-token", "own": "/run/secrets/mirror"}
    for name in ("hub", "optin", "own"):
        assert "Authorization: Bearer" in r["fileNetrc"][name]["config.json"], name
    for name in ("mirror", "plain"):
        assert r["fileNetrc"][name] == {"config.json": None}, name
    assert r["failedAssertions"] == []


def test_the_module_token_over_http_to_an_opted_in_host_is_an_error():
    err = nix_eval_error(f"""(import ./tests/nix/nixos.nix {{
      nixpkgsLib = {lib_expr()[len("(import "):-1]};
      userModule = {{ services.model-repo = {{ enable = true;
        auth.tokenFile = "/run/secrets/hf-token";
        models.plain = {per_file("org/plain", "http://mirror.example",
                                 **{"auth.moduleTokenForEndpoint": "true"})}; }}; }};
    }}).fileNetrc""")
    assert "would send a token over plain http:// to mirror.example" in err, err
    assert 'source.huggingface.endpoint = "http://mirror.example"' in err, err
    assert 'auth.tokenFile = "/run/secrets/hf-token"' in err and "https://" in err, err


def lib_model(body: str) -> str:
    return f"""let lib = {lib_expr()}; mr = import ./lib {{ inherit lib; }};
      pkgs = import ./tests/nix/stubs/pkgs.nix {{ inherit lib; }};
      m = mr.fetchModel pkgs ({{ name = "m"; }} // {body});
    in builtins.mapAttrs (_: f: f.fetchArgs.netrcPhase or null) (m.files or {{ }})"""


@pytest.mark.parametrize("body,option,host", [
    (per_file("o/n", "http://mirror.example", **{"auth.tokenEnvVar": '"HF_TOKEN"'}),
     'source.huggingface.endpoint = "http://mirror.example"', "mirror.example"),
    (per_file("o/n", "http://user@Mirror.Example:8080/hub", **{"auth.tokenFile": '"/t"'}),
     "source.huggingface.endpoint", "mirror.example"),
    ('{ source.url.url = "http://files.example/m.gguf"; hash = "%s"; '
     'auth.tokenEnvVar = "T"; }' % HASH, 'source.url = "http://files.example/m.gguf"',
     "files.example"),
    ('{ source.git-lfs = { url = "http://forge.example/m.git"; rev = "%s"; }; hash = "%s"; '
     'auth.tokenFile = "/t"; }' % (REV, HASH), 'source.git-lfs.url = "http://forge.example/m.git"',
     "forge.example"),
])
def test_a_token_over_plain_http_is_an_evaluation_error(body: str, option: str, host: str):
    expr = lib_model(body)
    if "git-lfs" in body:
        expr = expr.replace("builtins.mapAttrs (_: f: f.fetchArgs.netrcPhase or null) "
                            "(m.files or { })", "m.fetchArgs.netrcPhase")
    err = nix_eval_error(expr)
    assert f"would send a token over plain http:// to {host}" in err, err
    assert option in err, err


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8080", "http://localhost:9",
                                      "http://[::1]:5000", "https://mirror.example",
                                      "http://test.localhost"])
def test_a_token_to_loopback_or_https_is_fine(endpoint: str):
    got = nix_eval(lib_model(per_file("o/n", endpoint, **{"auth.tokenEnvVar": '"HF_TOKEN"'})))
    assert "Authorization: Bearer" in got["config.json"]


def test_no_token_no_check():
    got = nix_eval(lib_model(per_file("o/n", "http://mirror.example")))
    assert got == {"config.json": None}
