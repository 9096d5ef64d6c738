"""Bearer tokens to principals: secret keys, public JWTs and the exact 401 messages."""

import base64
import json

import pytest

from session_core.auth import CachedEnvironments, authenticate, generate_api_key, hash_api_key, mint_token
from session_core.errors import Unauthenticated
from session_core.models import Environment, EnvironmentType
from session_core.scopes import PrincipalKind

KEY = generate_api_key("DEVELOPMENT")
ENV = Environment("env1", "dev", EnvironmentType.DEVELOPMENT, "org", "proj", KEY)
OTHER = Environment("env2", "prod", EnvironmentType.PRODUCTION, "org", "proj", generate_api_key("PRODUCTION"))


class Environments:
    """A dict-backed stand-in for the environment repository."""

    def __init__(self, *envs: Environment) -> None:
        self._by_id = {e.id: e for e in envs}

    def get(self, environment_id):
        return self._by_id.get(environment_id)

    def get_by_api_key_hash(self, api_key_hash):
        return next((e for e in self._by_id.values() if hash_api_key(e.api_key) == api_key_hash), None)


ENVS = Environments(ENV, OTHER)


def auth(header, allow_jwt=True):
    return authenticate(header, ENVS, allow_jwt=allow_jwt)


def test_a_secret_key_is_a_private_principal_of_its_environment():
    principal = auth(f"Bearer {KEY}")

    assert principal.kind is PrincipalKind.PRIVATE
    assert principal.environment == ENV


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Invalid or Missing API key"),
        ("Bearer ", "Invalid or Missing API key"),
        ("Basic abc", "Invalid or Missing API key"),
        ("Bearer pk_dev_123", "Public API keys are not allowed for this request"),
        ("Bearer tr_dev_unknown", "Invalid API Key"),
        (f"Bearer {KEY}x", "Invalid API Key"),
    ],
)
def test_unusable_credentials_get_the_wire_messages(header, message):
    with pytest.raises(Unauthenticated) as raised:
        auth(header)

    assert raised.value.message == message


def test_a_minted_token_carries_its_scopes():
    principal = auth("Bearer " + mint_token(ENV, ["read:sessions:chat-1"]))

    assert principal.kind is PrincipalKind.PUBLIC_JWT
    assert principal.scopes == ("read:sessions:chat-1",)
    assert principal.environment == ENV


def test_routes_without_jwt_support_refuse_tokens():
    with pytest.raises(Unauthenticated, match="Public JWT API keys are not allowed"):
        auth("Bearer " + mint_token(ENV, ["admin"]), allow_jwt=False)


def test_an_expired_token_is_refused():
    with pytest.raises(Unauthenticated, match="^Public Access Token has expired"):
        auth("Bearer " + mint_token(ENV, ["admin"], ttl_seconds=60, now=1_000_000))


def test_a_token_signed_with_another_environments_key_is_refused():
    forged = mint_token(Environment(ENV.id, "x", ENV.type, "o", "p", OTHER.api_key), ["admin"])

    with pytest.raises(Unauthenticated, match="^Public Access Token is invalid"):
        auth("Bearer " + forged)


def test_a_token_for_an_unknown_environment_is_refused():
    stranger = Environment("nope", "x", ENV.type, "o", "p", KEY)

    with pytest.raises(Unauthenticated, match="environment not found"):
        auth("Bearer " + mint_token(stranger, ["admin"]))


@pytest.mark.parametrize("junk", ["eyJ.eyJ.sig", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJlbnYxIn0.", "eyJ!.@.#"])
def test_malformed_tokens_are_401_not_500(junk):
    with pytest.raises(Unauthenticated):
        auth("Bearer " + junk)


class CountingUnitOfWork:
    """Stands in for a read-only unit of work and counts how often it is opened."""

    opened = 0

    def __enter__(self):
        CountingUnitOfWork.opened += 1
        return self

    def __exit__(self, *exc_info):
        return None

    environments = ENVS


def test_cached_environments_answer_repeat_lookups_without_the_database():
    CountingUnitOfWork.opened = 0
    cache = CachedEnvironments(CountingUnitOfWork)

    found = [cache.get_by_api_key_hash(hash_api_key(KEY)) for _ in range(3)] + [cache.get("env1")] * 2

    assert found == [ENV] * 5
    assert CountingUnitOfWork.opened == 2


def test_cached_environments_do_not_remember_misses():
    CountingUnitOfWork.opened = 0
    cache = CachedEnvironments(CountingUnitOfWork)

    assert cache.get("nope") is None
    assert cache.get("nope") is None
    assert CountingUnitOfWork.opened == 2


def test_a_jwt_principal_knows_when_its_token_expires_and_a_secret_key_never_does():
    token = mint_token(ENV, ["read:sessions"], ttl_seconds=600)

    assert auth(f"Bearer {token}").expires_at == json_claims(token)["exp"]
    assert auth(f"Bearer {KEY}").expires_at is None


class SpentTokens:
    """A set standing in for the spent-token table: ``spend`` is True for a hash's first use."""

    def __init__(self) -> None:
        self.spent: dict[str, int] = {}

    def spend(self, token_hash: str, expires_at: int) -> bool:
        first = token_hash not in self.spent
        self.spent.setdefault(token_hash, expires_at)
        return first


def test_a_one_time_token_authorizes_its_first_use_only():
    tokens = SpentTokens()
    token = mint_token(ENV, ["read:sessions"], extra_claims={"otu": True})

    first = authenticate(f"Bearer {token}", ENVS, allow_jwt=True, spend=tokens.spend)
    with pytest.raises(Unauthenticated) as again:
        authenticate(f"Bearer {token}", ENVS, allow_jwt=True, spend=tokens.spend)

    assert first.kind is PrincipalKind.PUBLIC_JWT
    assert again.value.message == "Invalid Public Access Token"
    assert tokens.spent == {hash_api_key(token): json_claims(token)["exp"]}


def test_a_one_time_token_is_refused_where_nothing_can_spend_it_and_others_spend_nothing():
    tokens = SpentTokens()
    reusable = mint_token(ENV, ["read:sessions"], extra_claims={"otu": False})

    with pytest.raises(Unauthenticated, match="^Invalid Public Access Token$"):
        auth(f"Bearer {mint_token(ENV, ['read:sessions'], extra_claims={'otu': True})}")
    for _ in range(2):
        authenticate(f"Bearer {reusable}", ENVS, allow_jwt=True, spend=tokens.spend)

    assert tokens.spent == {}


def test_a_forged_one_time_token_spends_nothing():
    tokens = SpentTokens()
    forged = mint_token(OTHER, ["read:sessions"], extra_claims={"otu": True, "sub": ENV.id})

    with pytest.raises(Unauthenticated, match="invalid"):
        authenticate(f"Bearer {forged}", ENVS, allow_jwt=True, spend=tokens.spend)

    assert tokens.spent == {}


def json_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
