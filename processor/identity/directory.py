"""Static directory: addresses/CIDRs and principals (jwt.sub, API keys) -> users and teams.

Parsing and lookups are pure; reading the file lives in :func:`load_directory`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from processor.errors import ConfigError, Problem
from processor.model import User

_Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=256)]
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Distinct source addresses seen; past this many the address cache starts over.
_CACHE_LIMIT = 65_536


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: _Text = ""
    email: _Text = ""
    name: _Text = ""
    team: _Text = ""
    roles: tuple[_Text, ...] = ()
    addresses: tuple[_Text, ...] = ()
    principals: dict[_Text, tuple[_Text, ...]] = Field(default_factory=dict)


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    users: tuple[_Entry, ...] = ()


class Directory:
    """Immutable look-up tables built from a directory document."""

    def __init__(
        self,
        addresses: Mapping[str, User],
        networks: list[tuple[_Network, User]],
        principals: Mapping[tuple[str, str], User],
        users: Sequence[User] = (),
    ) -> None:
        self._addresses = dict(addresses)
        # Longest prefix first, so the most specific network wins.
        self._networks = sorted(networks, key=lambda n: n[0].prefixlen, reverse=True)
        self._principals = dict(principals)
        self._cache: dict[str, User | None] = {}
        # Teams of every user the directory names, by id and by email, so that a
        # user identified by a session or a trace still gets their team.
        self._teams: dict[str, str] = {}
        for user in users:
            if user.team:
                for key in (user.id, user.email):
                    if key:
                        self._teams[key] = user.team

    @classmethod
    def empty(cls) -> Directory:
        """A directory that knows nobody."""
        return cls({}, [], {})

    def __len__(self) -> int:
        return len(self._addresses) + len(self._networks) + len(self._principals)

    @property
    def has_principals(self) -> bool:
        """True when any principal (jwt.sub, API key, ...) is mapped."""
        return bool(self._principals)

    def team_of(self, user: User) -> str:
        """The user's team: their own, else the directory's for their id or email."""
        return user.team or self._teams.get(user.id) or self._teams.get(user.email) or ""

    def by_principal(self, key: str, value: str) -> User | None:
        """The user whose principal ``key`` (a span attribute) has ``value``."""
        return self._principals.get((key, value))

    def by_address(self, ip: str) -> User | None:
        """The user of a normalised IP: exact address first, then the longest CIDR."""
        try:
            return self._cache[ip]
        except KeyError:
            pass
        user = self._addresses.get(ip)
        if user is None and self._networks:
            address = ipaddress.ip_address(ip)
            user = next((u for net, u in self._networks if address in net), None)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[ip] = user
        return user


def parse_directory(data: Any) -> Directory:
    """Validate a directory document; ConfigError lists every problem with its path."""
    try:
        doc = _File.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(
            [Problem(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        ) from None
    problems: list[Problem] = []
    addresses: dict[str, User] = {}
    networks: list[tuple[_Network, User]] = []
    principals: dict[tuple[str, str], User] = {}
    everyone: list[User] = []
    for i, entry in enumerate(doc.users):
        path = f"users.{i}"
        if not entry.id and not entry.email:
            problems.append(Problem(path, "id or email is required"))
            continue
        user = User(entry.id, entry.email, entry.name, entry.roles, entry.team)
        everyone.append(user)
        _add_addresses(entry, user, path, addresses, networks, problems)
        for key, values in entry.principals.items():
            for value in values:
                if principals.setdefault((key, value), user) is not user:
                    problems.append(
                        Problem(f"{path}.principals.{key}", f"{value!r} belongs to two users")
                    )
    if problems:
        raise ConfigError(problems)
    return Directory(addresses, networks, principals, everyone)


def _add_addresses(
    entry: _Entry,
    user: User,
    path: str,
    addresses: dict[str, User],
    networks: list[tuple[_Network, User]],
    problems: list[Problem],
) -> None:
    for j, text in enumerate(entry.addresses):
        try:
            net = _unmapped(ipaddress.ip_network(text, strict=False))
        except ValueError:
            problems.append(Problem(f"{path}.addresses.{j}", "not an IP address or CIDR"))
            continue
        if net.num_addresses == 1:
            ip = str(net.network_address)
            if addresses.setdefault(ip, user) is not user:
                problems.append(Problem(f"{path}.addresses.{j}", f"{ip} belongs to two users"))
        else:
            networks.append((net, user))


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(net: _Network) -> _Network:
    """IPv4-mapped IPv6 networks as IPv4, since span addresses are normalised that way."""
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net


def load_directory(path: str | Path) -> Directory:
    """Read and parse a directory YAML file; ConfigError on any problem."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read {path}: {exc.strerror or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", f"{path}: not valid YAML: {exc}")]) from None
    return parse_directory(data)
