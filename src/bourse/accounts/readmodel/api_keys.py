"""API keys: an Alpaca-style key id and secret per client, the secret stored only as a hash.

The secret is 40 random letters and digits (about 238 bits), shown once at creation. It is
kept as an scrypt hash in PHC string form (`$scrypt$ln=14,r=8,p=1$<salt>$<hash>`), so the cost
can be raised later without invalidating keys, and compared in constant time. An unknown key
id costs the same scrypt as a known one, so timing does not tell which key ids exist.

scrypt at these settings takes tens of milliseconds: a gateway that authenticates every
request should remember recent successful verifications briefly rather than verify each time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import time
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import Column, Connection, insert, select, update

from bourse.accounts.readmodel import schema
from bourse.accounts.readmodel.queries import InvalidQuery
from bourse.accounts.readmodel.rows import ROLES, ApiKey, Role

_ALPHABET = string.ascii_letters + string.digits
_KEY_ID_ALPHABET = string.ascii_uppercase + string.digits
SECRET_LENGTH = 40
_KEY_PREFIX: dict[str, str] = {"trader": "PK", "admin": "AK"}

_LOG2_N, _R, _P, _DKLEN, _SALT_BYTES = 14, 8, 1, 32, 16
_MAXMEM = 64 * 1024 * 1024
# Hashed against when the key id is unknown: same cost, matches nothing.
_DUMMY_HASH = f"$scrypt$ln={_LOG2_N},r={_R},p={_P}${'A' * 22}${'A' * 43}"


def create_api_key(
    conn: Connection,
    account_id: str,
    role: Role = "trader",
    *,
    clock: Callable[[], int] = time.time_ns,
) -> tuple[str, str]:
    """Make a key for `account_id`; return (key_id, secret). Only the hash is stored."""
    if role not in ROLES:
        raise InvalidQuery("role", role, " or ".join(ROLES))
    key_id = _KEY_PREFIX[role] + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(18))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))
    conn.execute(
        insert(schema.api_keys).values(
            key_id=key_id,
            account_id=account_id,
            secret_hash=hash_secret(secret),
            role=role,
            created_at=clock(),
        )
    )
    return key_id, secret


def get_api_key(conn: Connection, key_id: str) -> ApiKey | None:
    """The key's public part (revoked keys included: see `revoked_at`)."""
    row = conn.execute(
        select(*_public_columns()).where(schema.api_keys.c.key_id == key_id)
    ).one_or_none()
    return None if row is None else schema.from_db(ApiKey, row)


def list_api_keys(conn: Connection, account_id: str) -> list[ApiKey]:
    """The account's keys, oldest first (revoked ones included)."""
    keys = schema.api_keys
    rows = conn.execute(
        select(*_public_columns())
        .where(keys.c.account_id == account_id)
        .order_by(keys.c.created_at, keys.c.key_id)
    ).all()
    return [schema.from_db(ApiKey, row) for row in rows]


def verify_api_key(conn: Connection, key_id: str, secret: str) -> ApiKey | None:
    """The key if `secret` is its secret and it is not revoked; None otherwise."""
    keys = schema.api_keys
    row = conn.execute(
        select(*_public_columns(), keys.c.secret_hash).where(keys.c.key_id == key_id)
    ).one_or_none()
    if row is None:
        secret_matches(secret, _DUMMY_HASH)  # the same work as for a real key
        return None
    values = schema.row_values(row)
    stored = values.pop("secret_hash")
    if not secret_matches(secret, stored) or values["revoked_at"] is not None:
        return None
    return msgspec.convert(values, ApiKey, strict=True)


def revoke_api_key(
    conn: Connection, key_id: str, *, clock: Callable[[], int] = time.time_ns
) -> bool:
    """Revoke the key; False if there is no such key or it was already revoked."""
    keys = schema.api_keys
    result = conn.execute(
        update(keys)
        .where(keys.c.key_id == key_id, keys.c.revoked_at.is_(None))
        .values(revoked_at=clock())
    )
    return result.rowcount == 1


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(secret, salt, _LOG2_N, _R, _P, _DKLEN)
    return f"$scrypt$ln={_LOG2_N},r={_R},p={_P}${_b64(salt)}${_b64(digest)}"


def secret_matches(secret: str, hashed: str) -> bool:
    """Whether `secret` hashes to `hashed`, compared in constant time."""
    try:
        _, scheme, params, salt, expected = hashed.split("$")
        settings = dict(item.split("=", 1) for item in params.split(","))
        log2_n, r, p = int(settings["ln"]), int(settings["r"]), int(settings["p"])
        salt_bytes, expected_bytes = _unb64(salt), _unb64(expected)
    except (ValueError, KeyError):
        return False
    # A hash that is not one of ours (a shorter digest would compare a prefix) matches nothing.
    if scheme != "scrypt" or len(expected_bytes) != _DKLEN or not 10 <= log2_n <= 20:
        return False
    if not (1 <= r <= 32 and 1 <= p <= 16):
        return False
    digest = _scrypt(secret, salt_bytes, log2_n, r, p, _DKLEN)
    return hmac.compare_digest(digest, expected_bytes)


def _scrypt(secret: str, salt: bytes, log2_n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=1 << log2_n, r=r, p=p, dklen=dklen, maxmem=_MAXMEM
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _public_columns() -> list[Column[Any]]:
    keys = schema.api_keys
    return [keys.c.key_id, keys.c.account_id, keys.c.role, keys.c.created_at, keys.c.revoked_at]
