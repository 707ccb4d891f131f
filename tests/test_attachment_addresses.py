"""Tables of the fetcher's address rules: classes, odd notations, embedded IPv4, the allow list, ports."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from gateway.attachments.addresses import (
    AllowList,
    FetchPolicy,
    IPAddress,
    is_canonical,
    parse_host_address,
    refusal_of_address,
)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link_local"),
        ("100.64.0.1", "cgnat"),
        ("100.100.100.200", "cgnat"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("192.0.2.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("198.51.100.7", "reserved"),
        ("203.0.113.9", "reserved"),
        ("192.88.99.1", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link_local"),
        ("::ffff:10.0.0.1", "private"),
        ("::127.0.0.1", "reserved"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link_local"),
        ("64:ff9b:1::7f00:1", "reserved"),
        ("2002:7f00:1::", "loopback"),
        ("2002:a00:1::1", "private"),
        ("2001::1", "reserved"),
        ("2001:db8::1", "reserved"),
        ("100::1", "reserved"),
        ("fd00:ec2::254", "private"),
        ("fc00::1", "private"),
        ("fe80::1", "link_local"),
        ("fec0::1", "private"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("8.8.8.8", None),
        ("93.184.215.14", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2002:808:808::1", None),
    ],
)
def test_address_classes(address: str, reason: str | None) -> None:
    """Each special-purpose range is refused with its class; embedded IPv4 is judged as itself; public passes."""
    assert refusal_of_address(ip_address(address)) == reason


@pytest.mark.parametrize(
    ("host", "address", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("2130706433", "127.0.0.1", False),
        ("0x7f000001", "127.0.0.1", False),
        ("017700000001", "127.0.0.1", False),
        ("0177.0.0.1", "127.0.0.1", False),
        ("0x7f.1", "127.0.0.1", False),
        ("127.1", "127.0.0.1", False),
        ("127.0.1", "127.0.0.1", False),
        ("0", "0.0.0.0", False),
        ("10.0x1.2", "10.1.0.2", False),
        ("[::1]", "::1", True),
        ("::ffff:7f00:1", "::ffff:127.0.0.1", True),
        ("localhost", None, False),
        ("example.com", None, False),
        ("1.2.3.4.5", None, False),
        ("256.1.1.1", None, False),
        ("09.1.1.1", None, False),
        ("4294967296", None, False),
        ("１２７.0.0.1", None, False),
    ],
)
def test_host_notations(host: str, address: str | None, canonical: bool) -> None:
    """Every notation glibc maps onto an address is read as that address; names and junk are not."""
    parsed = parse_host_address(host)
    assert parsed == (ip_address(address) if address else None)
    assert is_canonical(host) is canonical


def _ips(*texts: str) -> list[IPAddress]:
    return [ip_address(t) for t in texts]


def test_allow_list_entries() -> None:
    """host:port, host, [v6]:port, bare v6 and CIDR entries parse; a mapped address matches its IPv4 entry."""
    allow = AllowList.parse(
        ["127.0.0.1:8080", " Files.Intranet. ", "[::1]:9000", "fd00::5", "10.1.0.0/16", ""]
    )
    assert allow.permits("127.0.0.1", 8080, ip_address("127.0.0.1"))
    assert allow.permits("localhost", 8080, ip_address("127.0.0.1"))  # an address entry, whatever the name
    assert allow.permits("[::ffff:127.0.0.1]", 8080, ip_address("::ffff:127.0.0.1"))
    assert not allow.permits("127.0.0.1", 8081, ip_address("127.0.0.1"))
    assert allow.permits("files.intranet", 1234, ip_address("192.168.9.9"))  # a name entry: any port
    assert allow.permits("FILES.INTRANET.", 80, ip_address("192.168.9.9"))
    assert allow.permits("::1", 9000, ip_address("::1")) and not allow.permits("::1", 9001, ip_address("::1"))
    assert allow.permits("x", 1, ip_address("fd00::5"))
    assert allow.permits("anything", 5, ip_address("10.1.200.3"))
    assert not allow.permits("anything", 5, ip_address("10.2.0.1"))


@pytest.mark.parametrize(
    "entry", ["host:notaport", "host:0", "host:70000", "[::1", "[::1]x", ":80", "10.0.0.0/40"]
)
def test_allow_list_refuses_entries_it_cannot_read(entry: str) -> None:
    """A malformed entry stops the gateway at start with the entry named, instead of allowing something odd."""
    with pytest.raises(ValueError, match="cannot read the entry"):
        AllowList.parse([entry])


def test_policy_checks_every_address_and_public_ports() -> None:
    """A name with any forbidden address is refused; public addresses only on the web ports, unless allowed."""
    policy = FetchPolicy.from_entries(["127.0.0.1:8443"])
    assert policy.refusal("a.example", 443, _ips("8.8.8.8", "1.1.1.1")) is None
    assert policy.refusal("a.example", 443, _ips("8.8.8.8", "10.0.0.1")) == "private"
    assert policy.refusal("a.example", 22, _ips("8.8.8.8")) == "port"
    assert policy.refusal("a.example", 8000, _ips("8.8.8.8")) is None
    assert policy.refusal("a.example", 443, []) == "unresolvable"
    assert policy.refusal("localhost", 8443, _ips("127.0.0.1")) is None
    assert policy.refusal("localhost", 8443, _ips("127.0.0.1", "::1")) == "loopback"
    assert FetchPolicy().refusal("localhost", 8443, _ips("127.0.0.1")) == "loopback"
