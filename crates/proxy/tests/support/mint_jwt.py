#!/usr/bin/env python3
"""Mint JWTs and JWKS documents with PyJWT + cryptography, independently of Trellis's JOSE code.

Reads one JSON spec on stdin, writes one JSON result on stdout:

spec = {
  "keys":   {"<name>": {"type": "RSA", "bits": 2048} | {"type": "EC", "crv": "P-256"|"P-384"}
                       | {"type": "Ed25519"}, ...},
  "jwks":   {"<name>": [{"key": "<key name>", "kid": "k1", "alg": "RS256"?, "use": "sig"?}, ...]},
  "tokens": {"<name>": {
      "key": "<key name>",          # signing key (omit for alg none)
      "alg": "RS256",               # any PyJWT algorithm, or "none"
      "claims": {...},
      "headers": {...},             # extra header parameters (kid, jku, x5u, jwk, ...);
                                    # a value "$jwk:<key name>" becomes that key's public JWK
      "hmac_with_public_pem": true  # HS* signed with the key's PUBLIC PEM as the secret
  }}
}
result = {"jwks": {"<name>": "<json>"}, "tokens": {"<name>": "<jwt>"},
          "public_pem": {"<key name>": "<pem>"}}
"""

import base64
import hashlib
import hmac
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def generate(spec):
    t = spec["type"]
    if t == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.get("bits", 2048))
    if t == "EC":
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[spec["crv"]]
        return ec.generate_private_key(curve)
    if t == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise SystemExit(f"unknown key type {t}")


def public_jwk(key):
    pub = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        nums = pub.public_numbers()
        return {"kty": "RSA", "n": int_b64(nums.n), "e": int_b64(nums.e)}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        nums = pub.public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[key.curve.name]
        return {
            "kty": "EC",
            "crv": crv,
            "x": b64url(nums.x.to_bytes(size, "big")),
            "y": b64url(nums.y.to_bytes(size, "big")),
        }
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    raise SystemExit("unsupported key")


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hmac_token(alg, secret: bytes, claims, headers) -> str:
    """HS* by hand: PyJWT refuses asymmetric PEMs as HMAC secrets (the attack we test)."""
    header = {"alg": alg, "typ": "JWT", **headers}
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    sig = hmac.new(secret, signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(sig)


def main():
    spec = json.load(sys.stdin)
    keys = {name: generate(k) for name, k in spec.get("keys", {}).items()}
    out = {"jwks": {}, "tokens": {}, "public_pem": {}}
    for name, key in keys.items():
        out["public_pem"][name] = public_pem(key).decode()
    for name, entries in spec.get("jwks", {}).items():
        doc = []
        for e in entries:
            jwk = public_jwk(keys[e["key"]])
            for field in ("kid", "alg", "use"):
                if field in e:
                    jwk[field] = e[field]
            doc.append(jwk)
        out["jwks"][name] = json.dumps({"keys": doc})
    for name, t in spec.get("tokens", {}).items():
        alg = t["alg"]
        claims = t.get("claims", {})
        headers = {
            k: public_jwk(keys[v[5:]]) if isinstance(v, str) and v.startswith("$jwk:") else v
            for k, v in t.get("headers", {}).items()
        }
        if t.get("hmac_with_public_pem"):
            out["tokens"][name] = hmac_token(alg, public_pem(keys[t["key"]]), claims, headers)
        elif alg == "none":
            out["tokens"][name] = jwt.encode(claims, None, algorithm="none", headers=headers)
        else:
            out["tokens"][name] = jwt.encode(claims, keys[t["key"]], algorithm=alg, headers=headers)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
