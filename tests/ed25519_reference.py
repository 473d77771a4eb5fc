"""Textbook Edwards25519 arithmetic (RFC 8032, section 5.1), for the tests only.

Slow (a scalar multiplication takes milliseconds) and written for clarity: it is the independent
reference the key checks of provisioner/keys.py are compared with, and it builds the crafted
points (small-order, mixed-order, off-curve, non-canonical) the tests and the gate cases feed.
"""

from __future__ import annotations

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

# Extended homogeneous coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z.
Point = tuple[int, int, int, int]
IDENTITY: Point = (0, 1, 1, 0)


def add(a: Point, b: Point) -> Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def multiply(scalar: int, point: Point) -> Point:
    result = IDENTITY
    while scalar:
        if scalar & 1:
            result = add(result, point)
        point = add(point, point)
        scalar >>= 1
    return result


def is_identity(point: Point) -> bool:
    x, y, z, _ = point
    return x % P == 0 and (y - z) % P == 0


def recover_x(y: int, sign: int) -> int | None:
    """The x of the point with this y and sign bit, or None (RFC 8032 decoding rules)."""
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if x & 1 != sign else x


def decode(data: bytes) -> Point | None:
    value = int.from_bytes(data, "little")
    y, sign = value & ((1 << 255) - 1), value >> 255
    x = recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


def encode(point: Point) -> bytes:
    x, y, z, _ = point
    inverse = pow(z, -1, P)
    x, y = x * inverse % P, y * inverse % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def raw(y: int, sign: int = 0) -> bytes:
    """32 bytes for any y < 2**255 and sign bit, canonical or not, on the curve or not."""
    return (y | sign << 255).to_bytes(32, "little")


BASE: Point = decode(raw(4 * pow(5, -1, P) % P))  # type: ignore[assignment]
# A point of order 8: 2707…022 is the y of the order-8 points libsodium blacklists.
_ORDER_8 = decode(raw(2707385501144840649318225287225658788936804267575313519463743609750303402022))
assert _ORDER_8 is not None
ORDER_8: Point = _ORDER_8
TORSION: tuple[Point, ...] = tuple(multiply(i, ORDER_8) for i in range(8))


def classify(data: bytes) -> str:
    """What a careful verifier makes of 32 bytes: ok, small-order, non-canonical, mixed-order
    or off-curve. Small order wins over non-canonical, since a verifier that reduces y (as
    OpenSSH does) sees the small-order point."""
    value = int.from_bytes(data, "little")
    y = value & ((1 << 255) - 1)
    canonical = raw(y % P, value >> 255)
    point = decode(canonical)
    if (point is not None and is_identity(multiply(8, point))) or y % P in (1, P - 1):
        return "small-order"  # (y = +-1 with the sign bit set has no x: still those points)
    if y >= P:
        return "non-canonical"
    if point is None:
        return "off-curve"
    return "ok" if is_identity(multiply(L, point)) else "mixed-order"


def off_curve_y(start: int = 2) -> int:
    """The smallest y >= start that is the y of no point of the curve."""
    y = start
    while recover_x(y, 0) is not None:
        y += 1
    return y
