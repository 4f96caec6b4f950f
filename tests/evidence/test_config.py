"""The evidence config: the example loads, mistakes are refused with their place, tokens are
checked in constant time against their hashes, and the CLI makes tokens the config accepts."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from _services import free_port

import evidence
from evidence._access import Tokens
from guantong import _configfile
from ingest import migrate

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "evidence.example.yaml"


def test_the_example_config_loads() -> None:
    config = _configfile.load(EXAMPLE, "evidence")
    assert isinstance(config, evidence.EvidenceConfig)
    assert config.address == ("127.0.0.1", 8090)
    assert config.identifiers.token_file == EXAMPLE.parent / "identifiers.token"
    assert config.metrics.fresh_within == 300
    assert [(t.name, t.role, t.firms) for t in config.tokens] == [
        ("platform-admin", "admin", ()),
        ("provider-acme", "provider", ("88.709.911/firm", "88.709.912/firm")),
        ("evaluator-zhang", "evaluator", ("88.709.911/firm",)),
    ]
    assert config.tokens[2].expires == dt.datetime(2027, 6, 29, 16, tzinfo=dt.UTC)


def example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return doc


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ({"firms": ["88.709.911/firm"]}, "an admin sees every firm"),
        ({"role": "evaluator"}, "a evaluator token needs the firms it may see"),
        ({"sha256": "secret"}, "should match pattern"),
        ({"role": "evaluator", "firms": ["no identifier"]}, "prefix"),
        ({"expires": "2027-01-01T00:00:00"}, "timezone"),
        ({"role": "root"}, "'admin', 'provider' or 'evaluator'"),
    ],
)
def test_a_wrong_token_entry_is_refused_with_its_name(
    tmp_path: Path, token: dict[str, Any], message: str
) -> None:
    doc = example()
    doc["tokens"][0].update(token)
    path = tmp_path / "evidence.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(_configfile.ConfigFileError) as err:
        _configfile.load(path)
    assert "token 'platform-admin'" in str(err.value)
    assert message in str(err.value)


def test_a_token_given_twice_is_refused(tmp_path: Path) -> None:
    doc = example()
    doc["tokens"][1]["sha256"] = doc["tokens"][0]["sha256"]
    path = tmp_path / "evidence.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(_configfile.ConfigFileError, match="token sha256 given twice"):
        _configfile.load(path)


def test_tokens_are_checked_against_their_hash_and_expiry() -> None:
    secret, sha256 = evidence.new_token()
    until = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    entry = {"name": "z", "role": "evaluator", "firms": ["88.709.911/firm"], "sha256": sha256,
             "expires": until}  # fmt: skip
    config = evidence.EvidenceConfig.model_validate(
        {**example(), "tokens": [entry]}, context={"base_dir": EXAMPLE.parent}
    )
    tokens = Tokens(config.tokens)
    grant = tokens.check(f"Bearer {secret}", now=until - dt.timedelta(seconds=1))
    assert (grant.name, grant.role, grant.firms) == ("z", "evaluator", {"88.709.911/firm"})
    assert grant.sees("88.709.911/firm")
    assert not grant.sees("88.709.912/firm")
    with pytest.raises(evidence.AccessDenied, match="not in the scope of token 'z'") as err:
        grant.require("88.709.912/firm")
    assert err.value.status == 403
    for header, reason in [
        (None, "a bearer token is needed"),
        (f"Basic {secret}", "must be 'Bearer <token>'"),
        (f"Bearer {secret}x", "unknown token"),
        (f"Bearer {sha256}", "unknown token"),  # the hash is not the secret
    ]:
        with pytest.raises(evidence.AccessDenied, match=reason) as err:
            tokens.check(header, now=until - dt.timedelta(seconds=1))
        assert err.value.status == 401
    with pytest.raises(evidence.AccessDenied, match="expired at 2027-01-01T00:00:00"):
        tokens.check(f"Bearer {secret}", now=until)


def guantong(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guantong", *args], capture_output=True, text=True, check=False
    )


def test_the_token_command_prints_a_secret_and_the_entry_that_admits_it() -> None:
    done = guantong("evidence", "token", "--name", "li", "--role", "provider",
                    "--firm", "88.709.911/firm", "--days", "30")  # fmt: skip
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    (entry,) = yaml.safe_load(done.stderr)
    assert entry["sha256"] == evidence.digest(secret)
    assert (entry["name"], entry["role"], entry["firms"]) == ("li", "provider", ["88.709.911/firm"])
    config = evidence.EvidenceConfig.model_validate(
        {**example(), "tokens": [entry]}, context={"base_dir": EXAMPLE.parent}
    )
    grant = Tokens(config.tokens).check(f"Bearer {secret}")
    assert grant.expires is not None
    assert dt.timedelta(days=29) < grant.expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    refused = guantong(
        "evidence", "token", "--name", "a", "--role", "admin", "--firm", "88.709.911/firm"
    )
    assert refused.returncode == 2
    assert "an admin takes no --firm" in refused.stderr


def test_serve_answers_503_without_a_store_schema_and_stops_on_sigterm(
    pg_dsn: str, tmp_path: Path
) -> None:
    secret, sha256 = evidence.new_token()
    doc = example()
    port = free_port()
    doc.update(listen=f"127.0.0.1:{port}", database={"dsn": pg_dsn},
               tokens=[{"name": "ops", "role": "admin", "sha256": sha256}])  # fmt: skip
    doc["identifiers"]["token_file"] = "node.token"  # noqa: S105 - a file name
    (tmp_path / "node.token").write_text("unused\n", encoding="utf-8")
    config = tmp_path / "evidence.yaml"
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "guantong", "evidence", "serve", "-c", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{url}/healthz", timeout=2).json() == {"status": "ok"}
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {secret}"}
        answer = httpx.get(f"{url}/api/v1/firms", headers=auth, timeout=10)
        assert answer.status_code == 503
        assert answer.json()["error"].startswith("no ingest schema in the store")
        migrate(pg_dsn)
        answer = httpx.get(f"{url}/api/v1/firms", headers=auth, timeout=10)
        assert (answer.status_code, answer.json()) == (200, [])
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"evidence API and web page on {url}" in err


def test_serve_with_a_bad_config_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "evidence.yaml"
    config.write_text("kind: evidence\nlisten: nowhere\n", encoding="utf-8")
    done = guantong("evidence", "serve", "-c", str(config))
    assert done.returncode == 1
    assert "listen must be host:port" in done.stderr


def test_serve_without_its_token_file_exits_1(tmp_path: Path) -> None:
    doc = example()
    doc["listen"] = f"127.0.0.1:{free_port()}"
    config = tmp_path / "evidence.yaml"
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    done = guantong("evidence", "serve", "-c", str(config))
    assert done.returncode == 1
    assert f"{tmp_path / 'identifiers.token'}" in done.stderr
