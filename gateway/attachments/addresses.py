"""Which addresses the attachment fetcher may open a socket to (tools-and-attachments.md §8.1), and the
operator's exceptions (`ATTACHMENT_FETCH_ALLOW`).

The decision is made on the exact address a socket would open, never on the URL's spelling: the fetcher's
resolver asks `FetchPolicy.refusal` about every address a name resolves to, and the fetcher asks about a host
that is itself an address before any socket exists. Python's `ipaddress` flags are not enough on their own
(§8.1): `100.64.0.1` (CGNAT) is not private, `::ffff:127.0.0.1` is not loopback, and NAT64 / 6to4 forms of a
forbidden IPv4 address claim to be global. So the rules are explicit networks, embedded IPv4 addresses
unwrapped and checked themselves, and finally anything that is not global.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address

#: Ports a public address may be fetched on (Advocate's default list); an allow-list entry lifts this.
PUBLIC_PORTS = frozenset({80, 443, 8000, 8080, 8443})

#: Refusal reasons for addresses; with the fetcher's own reasons they are the bounded metric labels.
_V4_RULES: tuple[tuple[str, IPv4Network], ...] = tuple(
    (reason, IPv4Network(network))
    for reason, network in (
        ("unspecified", "0.0.0.0/8"),
        ("private", "10.0.0.0/8"),
        ("cgnat", "100.64.0.0/10"),  # RFC 6598; Alibaba's metadata service is 100.100.100.200
        ("loopback", "127.0.0.0/8"),
        ("link_local", "169.254.0.0/16"),  # 169.254.169.254: AWS / GCP / Azure metadata
        ("private", "172.16.0.0/12"),
        ("reserved", "192.0.0.0/24"),
        ("reserved", "192.0.2.0/24"),
        ("reserved", "192.88.99.0/24"),  # 6to4 relay anycast
        ("private", "192.168.0.0/16"),
        ("reserved", "198.18.0.0/15"),
        ("reserved", "198.51.100.0/24"),
        ("reserved", "203.0.113.0/24"),
        ("multicast", "224.0.0.0/4"),
        ("reserved", "240.0.0.0/4"),  # includes 255.255.255.255
    )
)
_V6_RULES: tuple[tuple[str, IPv6Network], ...] = tuple(
    (reason, IPv6Network(network))
    for reason, network in (
        ("unspecified", "::/128"),
        ("loopback", "::1/128"),
        ("reserved", "::/96"),  # deprecated IPv4-compatible addresses
        ("reserved", "64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215): never a public destination
        ("reserved", "100::/64"),  # discard-only
        ("reserved", "2001::/32"),  # Teredo
        ("reserved", "2001:db8::/32"),  # documentation
        ("private", "fc00::/7"),  # ULA; AWS IMDS over IPv6 is fd00:ec2::254
        ("link_local", "fe80::/10"),
        ("private", "fec0::/10"),  # deprecated site-local
        ("multicast", "ff00::/8"),
    )
)
_NAT64 = IPv6Network("64:ff9b::/96")


def refusal_of_address(address: IPAddress) -> str | None:
    """Why a socket to `address` is refused (`loopback`, `private`, `link_local`, `cgnat`, `multicast`,
    `reserved`, `unspecified`), or None for a public address."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            return refusal_of_address(embedded)
        for reason, network in _V6_RULES:
            if address in network:
                return reason
    else:
        for reason, v4_network in _V4_RULES:
            if address in v4_network:
                return reason
    return None if address.is_global else "reserved"


def _embedded_v4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address a mapped (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:AABB:CCDD::`)
    address stands for: reaching it reaches that IPv4 address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def parse_host_address(host: str) -> IPAddress | None:
    """The address a URL host denotes by itself, in any notation the system resolver accepts, or None for a
    name. Besides standard literals this reads inet_aton's legacy forms (`2130706433`, `0x7f.1`,
    `017700000001`, `127.1`), which glibc's getaddrinfo maps onto an address without any DNS lookup."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ip_address(bare)
    except ValueError:
        pass
    return _inet_aton(bare)


def is_canonical(host: str) -> bool:
    """Whether a host that is an address is written in its standard form (what aiohttp agrees to connect to)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip_address(bare)
    except ValueError:
        return False
    return True


def _inet_aton(text: str) -> IPv4Address | None:
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        number = _c_integer(part)
        if number is None:
            return None
        numbers.append(number)
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    value = 0
    for n in leading:
        value = value << 8 | n
    return IPv4Address(value << (8 * (4 - len(leading))) | last)


def _c_integer(part: str) -> int | None:
    """A number as C's strtoul with base 0 reads it: 0x… hex, 0… octal, else decimal."""
    if not part.isascii():
        return None
    lowered = part.lower()
    try:
        if lowered.startswith("0x"):
            return int(lowered[2:], 16) if len(lowered) > 2 else 0
        if lowered.startswith("0") and len(lowered) > 1:
            return int(lowered[1:], 8)
        return int(lowered, 10) if lowered.isdigit() else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AllowList:
    """`ATTACHMENT_FETCH_ALLOW`: `host:port` (that port only), `host` (any port; a name or an address) or a
    CIDR (any port). A name entry allows whatever that name resolves to; an address entry allows that address
    whatever name led there."""

    #: (host name or address in standard form, port or None for any)
    hosts: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """The allow list of the setting's entries; ValueError names an entry it cannot read."""
        hosts: set[tuple[str, int | None]] = set()
        networks: list[IPv4Network | IPv6Network] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                if "/" in entry:
                    networks.append(ip_network(entry, strict=False))
                else:
                    hosts.add(_host_entry(entry))
            except ValueError:
                raise ValueError(f"ATTACHMENT_FETCH_ALLOW: cannot read the entry {entry!r}") from None
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, port: int, address: IPAddress) -> bool:
        plain = _unmapped(address)
        names = (_normal_host(host), str(plain))
        if any((name, port) in self.hosts or (name, None) in self.hosts for name in names):
            return True
        return any(plain in network for network in self.networks)


def _host_entry(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        literal, bracket, rest = entry[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else None
        if not bracket or (rest and port is None):
            raise ValueError(entry)
        return str(ip_address(literal)), _port(port)
    if entry.count(":") > 1:  # a bare IPv6 address
        return str(ip_address(entry)), None
    name, _, port_text = entry.partition(":")
    if not name:
        raise ValueError(entry)
    return _normal_host(name), _port(int(port_text)) if port_text else None


def _port(port: int | None) -> int | None:
    if port is not None and not 0 < port < 65536:
        raise ValueError(port)
    return port


def _normal_host(host: str) -> str:
    """Names compare case-insensitively without a trailing dot; addresses in their standard form."""
    address = parse_host_address(host)
    if address is not None:
        return str(_unmapped(address))
    return host.lower().rstrip(".")


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Where the fetcher may connect: public addresses on `PUBLIC_PORTS`, plus the allow list."""

    allow: AllowList = AllowList()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> FetchPolicy:
        return cls(AllowList.parse(entries))

    def refusal(self, host: str, port: int, addresses: Sequence[IPAddress]) -> str | None:
        """None when a socket to every one of `addresses` on `port` is allowed, else the first refusal
        reason (an address class, `port`, or `unresolvable` when there is no address at all)."""
        if not addresses:
            return "unresolvable"
        for address in addresses:
            if self.allow.permits(host, port, address):
                continue
            reason = refusal_of_address(address)
            if reason is not None:
                return reason
            if port not in PUBLIC_PORTS:
                return "port"
        return None
