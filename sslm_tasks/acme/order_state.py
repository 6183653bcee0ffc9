"""What an ACME order records between its steps (:class:`OrderState`) and what a step hands to
the challenge publishers (:class:`ChallengeToPublish`): plain data, apart from
:mod:`sslm_tasks.acme.orders`, so that reading a service's record (``sslm-mgr -s``) imports
neither the acme library nor requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sslm_tasks.config.models import ChallengeKind
from sslm_tasks.errors import StoreError

# RFC 8555 §7.1.6 status names.
PENDING: Final = "pending"
READY: Final = "ready"
PROCESSING: Final = "processing"
VALID: Final = "valid"
INVALID: Final = "invalid"


@dataclass(frozen=True)
class ChallengeState:
    """One challenge of an authorization: its type, URL, token and status."""

    type: str
    url: str
    token: str
    status: str


@dataclass(frozen=True)
class AuthorizationState:
    """One authorization: the name it proves (without ``*.``), its status and challenges.

    ``error`` is the CA's reason once it is invalid.
    """

    url: str
    identifier: str
    wildcard: bool
    status: str
    challenges: tuple[ChallengeState, ...]
    error: str | None = None

    def challenge(self, kind: str) -> ChallengeState | None:
        """This authorization's challenge of type ``kind``, if the CA offers one."""
        return next((chall for chall in self.challenges if chall.type == kind), None)


@dataclass(frozen=True)
class OrderState:
    """What a task records to continue an order: never more than URLs, names and statuses.

    Serialise with :meth:`to_json`, read back with :meth:`from_json`. Tokens are public (they
    end up in DNS or on a web server); the state holds no key material.
    """

    url: str
    status: str
    identifiers: tuple[str, ...]
    authorizations: tuple[AuthorizationState, ...]
    certificate_url: str | None = None
    profile: str | None = None
    error: str | None = None

    @property
    def all_valid(self) -> bool:
        """Every authorization is valid: the order can be finalized. False for an order whose
        authorizations were not read yet (every order has at least one)."""
        return bool(self.authorizations) and all(
            authz.status == VALID for authz in self.authorizations
        )

    def to_json(self) -> dict[str, Any]:
        """A dict of JSON types only (lists, strings, booleans, None)."""
        data = dataclasses.asdict(self)
        data["identifiers"] = list(self.identifiers)
        data["authorizations"] = [
            {
                **dataclasses.asdict(authz),
                "challenges": [dataclasses.asdict(c) for c in authz.challenges],
            }
            for authz in self.authorizations
        ]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OrderState:
        """Inverse of :meth:`to_json`.

        Raises:
          StoreError: ``data`` is not a recorded order state.
        """
        try:
            return cls(
                url=str(data["url"]),
                status=str(data["status"]),
                identifiers=tuple(str(name) for name in data["identifiers"]),
                authorizations=tuple(
                    AuthorizationState(
                        url=str(authz["url"]),
                        identifier=str(authz["identifier"]),
                        wildcard=bool(authz["wildcard"]),
                        status=str(authz["status"]),
                        challenges=tuple(
                            ChallengeState(
                                type=str(chall["type"]),
                                url=str(chall["url"]),
                                token=str(chall["token"]),
                                status=str(chall["status"]),
                            )
                            for chall in authz["challenges"]
                        ),
                        error=_optional_str(authz.get("error")),
                    )
                    for authz in data["authorizations"]
                ),
                certificate_url=_optional_str(data.get("certificate_url")),
                profile=_optional_str(data.get("profile")),
                error=_optional_str(data.get("error")),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise StoreError(f"recorded ACME order state is incomplete: {err!r}") from err


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class ChallengeToPublish:
    """What must be served before the CA is asked to validate one authorization.

    Attributes:
      kind: ``dns-01`` or ``http-01``.
      identifier: the name validated (``example.test`` also for ``*.example.test``).
      wildcard: the authorization is for ``*.<identifier>``.
      url: the challenge URL to :func:`answer` once this is published.
      token: the challenge token (base64url).
      name: dns-01: the TXT owner name, ``_acme-challenge.<identifier>``; http-01: the URL path,
        ``/.well-known/acme-challenge/<token>``.
      value: dns-01: the TXT value; http-01: the file's content (the key authorization).
    """

    kind: ChallengeKind
    identifier: str
    wildcard: bool
    url: str
    token: str
    name: str
    value: str
