"""Which webhook URLs the service may call: http(s) without credentials, to hosts whose every
address is public (or allowlisted), so a subscription cannot aim the service at itself, the
cloud's metadata endpoint or anything else on the internal network."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from urllib.parse import urlsplit

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

# Instance metadata and platform endpoints of the usual clouds (AWS IMDS v4/v6, ECS task
# metadata, AWS DNS and NTP, Alibaba, Azure wireserver, Oracle). Some are link-local or private
# anyway; Azure's is a public address, which is why the list exists. An allowlist lets one of
# them through only if it names that very address (a /32 or /128), never as part of a range.
METADATA_ADDRESSES = frozenset(
    ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.169.253",
        "169.254.169.123",
        "100.100.100.200",
        "168.63.129.16",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
        "fd00:ec2::123",
    )
)
_NAT64 = ip_network("64:ff9b::/96")


class TargetRefused(Exception):
    """A webhook URL the service will not call; the message says why (safe to show an admin)."""


@dataclass(frozen=True)
class WebhookTarget:
    """Where a webhook URL points: the host as it is resolved (ASCII, no brackets) and port."""

    scheme: str
    host: str
    port: int


def webhook_target(url: str) -> WebhookTarget:
    """The target of `url`, or TargetRefused if it is not http(s), carries credentials or has
    no host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused("only http and https URLs can receive webhooks")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise TargetRefused("a webhook URL must not carry credentials (sign with the secret)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetRefused("the URL has no host")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise TargetRefused("the host name is not valid") from exc
    return WebhookTarget(scheme, host, port or (443 if scheme == "https" else 80))


def parse_networks(text: str) -> tuple[Network, ...]:
    """`BACKROOM_WEBHOOK_ALLOWED_NETWORKS`: CIDRs (or single addresses) separated by commas or
    spaces, e.g. `127.0.0.0/8,::1`. Raises ValueError for a malformed one."""
    return tuple(ip_network(item, strict=False) for item in text.replace(",", " ").split())


def _destinations(address: Address) -> list[Address]:
    """Where a packet to `address` may end up: an IPv4-mapped or NAT64 address is only a vehicle
    for its IPv4 address; a 6to4 or Teredo one is judged both as itself and by the IPv4 address
    it carries."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return [address.ipv4_mapped]
        if address in _NAT64:
            return [IPv4Address(int(address) & 0xFFFFFFFF)]
        if address.sixtofour is not None:
            return [address, address.sixtofour]
        if address.teredo is not None:
            return [address, address.teredo[1]]
    return [address]


def address_class(address: Address) -> str | None:
    """Why `address` is not a public one (metadata, unspecified, loopback, link-local,
    multicast, reserved, private), or None if it is."""
    if address in METADATA_ADDRESSES:
        return "metadata"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private or (isinstance(address, IPv6Address) and address.is_site_local):
        return "private"
    if not address.is_global:
        return "reserved"
    return None


def _allowed(address: Address, kind: str, allowed: Sequence[Network]) -> bool:
    if kind == "metadata":
        return any(net.num_addresses == 1 and address in net for net in allowed)
    return any(address in net for net in allowed)


def refused_class(text: str, allowed: Sequence[Network] = ()) -> str | None:
    """The class that forbids connecting to the address `text` (see `address_class`; "invalid"
    if it is no IP address), or None if the service may connect to it."""
    try:
        address = ip_address(text.split("%", 1)[0])  # an IPv6 zone id is not part of it
    except ValueError:
        return "invalid"
    for destination in _destinations(address):
        kind = address_class(destination)
        if kind is not None and not (
            _allowed(destination, kind, allowed) or _allowed(address, kind, allowed)
        ):
            return kind
    return None


def address_refusal(text: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why the service may not connect to the address `text`, or None if it may."""
    kind = refused_class(text, allowed)
    return None if kind is None else f"{text} is a {kind} address"


def vet_addresses(host: str, addresses: Iterable[str], allowed: Sequence[Network] = ()) -> str:
    """The address to connect to for `host`: the first of `addresses`, once every one of them
    is acceptable (a name with one internal address among public ones is refused, or a second
    lookup could pick it). Raises TargetRefused naming the first refused address."""
    listed = list(dict.fromkeys(addresses))
    if not listed:
        raise TargetRefused(f"{host} has no address")
    for address in listed:
        kind = refused_class(address, allowed)
        if kind is not None:
            where = address if address == host else f"{host} resolves to {address},"
            detail = f"{where} {'is ' if address == host else ''}a {kind} address"
            raise TargetRefused(
                f"{detail}, which webhooks may not reach (unless allowed by configuration)"
            )
    return listed[0]
