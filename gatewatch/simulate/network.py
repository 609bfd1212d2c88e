"""Where simulated traffic comes from. Only documentation, benchmarking and private ranges are used,
so no real host ever appears in simulated data:

  corporate offices (admin allow-lists)  192.0.2.0/24 and 198.51.100.0/24, one /27 per tenant;
                                         IPv6 2001:db8:c0NN::/48 (see `corp_cidrs`)
  home broadband                         198.18.0.0/15 (RFC 2544);   IPv6 2001:db8:1000::/36
  mobile carriers (CGNAT)                100.64.0.0/10, one /14 per carrier;   IPv6 2001:db8:4000::/36
  cloud / hosting providers              203.0.113.0/24;   IPv6 2001:db8:f000::/36
  inside the platform (LBs, services)    10.0.0.0/8

Hosting addresses are used by legitimate server-side clients as well as by intruders.
"""

from __future__ import annotations

import ipaddress
import random

_DOC6 = 0x20010DB8 << 96


def corp_cidrs(index: int) -> list[str]:
    """The corporate egress ranges of the tenant at position `index`: allowed sources of admin routes."""
    if index < 8:
        v4 = f"192.0.2.{32 * index}/27"
    elif index < 16:
        v4 = f"198.51.100.{32 * (index - 8)}/27"
    else:
        v4 = f"10.250.{index % 256}.0/24"
    return [v4, f"2001:db8:c0{index % 256:02x}::/48"]


def corp_ip(rng: random.Random, cidr: str) -> str:
    net = ipaddress.ip_network(cidr)
    if net.version == 4:
        return str(net.network_address + rng.randint(1, net.num_addresses - 2))
    return str(net.network_address + (rng.getrandbits(16) << 64 | rng.getrandbits(64)))


def _v6(prefix36: int, rng: random.Random) -> str:
    """A random address under 2001:db8:<prefix36>::/36 (prefix36 = the third hextet's top nibble)."""
    subnet = (prefix36 << 28) | rng.getrandbits(28)  # 32 bits after 2001:db8
    return str(ipaddress.IPv6Address(_DOC6 | subnet << 64 | rng.getrandbits(64)))


def residential_v4(rng: random.Random) -> str:
    return f"198.{rng.randint(18, 19)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def residential_v6(rng: random.Random) -> str:
    return _v6(0x1, rng)


def residential(rng: random.Random, v6_share: float = 0.2) -> str:
    return residential_v6(rng) if rng.random() < v6_share else residential_v4(rng)


def carrier_v4(rng: random.Random, carrier: int) -> str:
    """A CGNAT address of mobile carrier 0..3: a phone gets a new one on most reconnects."""
    return f"100.{64 + 16 * (carrier % 4) + rng.randint(0, 15)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def carrier_v6_prefix(rng: random.Random, carrier: int) -> int:
    """The /64 a carrier assigns to one handset (stable while attached)."""
    return _DOC6 | ((0x4 << 28) | ((carrier % 4) << 24) | rng.getrandbits(24)) << 64


def carrier_v6(rng: random.Random, prefix: int) -> str:
    return str(ipaddress.IPv6Address(prefix | rng.getrandbits(64)))


def hosting_v4(rng: random.Random) -> str:
    return f"203.0.113.{rng.randint(1, 254)}"


def hosting(rng: random.Random, v6_share: float = 0.15) -> str:
    return _v6(0xF, rng) if rng.random() < v6_share else hosting_v4(rng)


def internal(rng: random.Random) -> str:
    return f"10.{rng.randint(0, 40)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def in_cidrs(ip: str, cidrs: list[str]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr in ipaddress.ip_network(c) for c in cidrs)
