"""Which webhook URLs and addresses the service refuses (issue 9: the metadata URL was 201),
per scheme, credentials and address class, IPv4 and IPv6, and what the allowlist lets through."""

import pytest

from services.notifications.targets import (
    TargetRefused,
    address_refusal,
    parse_networks,
    vet_addresses,
    webhook_target,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "reserved"),  # carrier-grade NAT: not globally routable
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),  # public, yet Azure's platform endpoint
        ("fd00:ec2::254", "metadata"),
        # IPv6 forms that reach an IPv4 address.
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_internal_addresses_are_refused_by_class(address: str, kind: str) -> None:
    refusal = address_refusal(address)
    assert refusal is not None and f"a {kind} address" in refusal, refusal


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "2001:4860::8888"]
)
def test_public_addresses_are_accepted(address: str) -> None:
    assert address_refusal(address) is None


def test_the_allowlist_lets_its_networks_through_and_nothing_else() -> None:
    loopback = parse_networks("127.0.0.0/8, ::1/128")
    assert address_refusal("127.0.0.1", loopback) is None
    assert address_refusal("::1", loopback) is None
    assert address_refusal("::ffff:127.0.0.1", loopback) is None
    assert address_refusal("10.0.0.1", loopback) is not None
    assert address_refusal("169.254.169.254", loopback) is not None
    assert address_refusal("192.168.1.1", parse_networks("192.168.0.0/16")) is None


def test_a_metadata_address_is_let_through_only_by_its_own_entry_never_by_a_range() -> None:
    assert address_refusal("169.254.169.254", parse_networks("169.254.0.0/16")) is not None
    assert address_refusal("169.254.1.1", parse_networks("169.254.0.0/16")) is None
    assert address_refusal("169.254.169.254", parse_networks("169.254.169.254/32")) is None


def test_a_malformed_allowlist_entry_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_networks("127.0.0.0/8,not-a-network")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example/x", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://hooks.example/", "only http and https"),
        ("https://user:pass@hooks.example/x", "credentials"),
        ("https://user@hooks.example/x", "credentials"),
        ("https:///x", "no host"),
        ("https://hooks.example:99999/x", "not a valid URL"),
    ],
)
def test_urls_that_are_not_plain_http_s_are_refused(url: str, why: str) -> None:
    with pytest.raises(TargetRefused, match=why):
        webhook_target(url)


def test_a_target_is_the_host_and_port_the_url_names() -> None:
    assert webhook_target("https://Hooks.Example./x").host == "hooks.example"
    assert webhook_target("https://hooks.example/x").port == 443
    assert webhook_target("http://hooks.example/x").port == 80
    assert webhook_target("http://[::1]:8080/x").host == "::1"
    assert webhook_target("https://bücher.example/").host == "xn--bcher-kva.example"


def test_every_address_of_a_host_must_be_acceptable() -> None:
    assert vet_addresses("h.example", ["93.184.216.34", "8.8.8.8"]) == "93.184.216.34"
    with pytest.raises(TargetRefused, match=r"h.example resolves to 10.0.0.1, a private address"):
        vet_addresses("h.example", ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(TargetRefused, match="has no address"):
        vet_addresses("h.example", [])
