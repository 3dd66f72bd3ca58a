//! The auth service's RS256 signing key: generated at start (RSA 2048) or loaded from a
//! directory where a previous run saved it, published as a JWK.

use std::path::Path;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// File name of the saved key (PKCS#8 DER) inside `--key-dir`.
pub const KEY_FILE: &str = "jwt-signing-key.pk8";

/// An RSA signing key with its JWK form.
pub struct SigningKey {
    /// PKCS#1 `RSAPrivateKey` DER (what `jsonwebtoken::EncodingKey::from_rsa_der` takes).
    pkcs1: Vec<u8>,
    /// base64url modulus and exponent.
    pub n: String,
    pub e: String,
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
}

impl SigningKey {
    /// Generates a fresh RSA 2048 key.
    pub fn generate() -> anyhow::Result<(SigningKey, Vec<u8>)> {
        let kp = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        let pkcs8 = kp
            .as_der()
            .map_err(|_| anyhow::anyhow!("cannot encode the RSA key"))?
            .as_ref()
            .to_vec();
        Ok((Self::from_pair(&kp, &pkcs8)?, pkcs8))
    }

    /// Reads a PKCS#8 DER RSA key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<SigningKey> {
        let kp = KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| anyhow::anyhow!("not an RSA PKCS#8 key: {e}"))?;
        Self::from_pair(&kp, pkcs8)
    }

    /// Loads `dir/jwt-signing-key.pk8`, or generates a key and saves it there (mode 0600).
    pub fn load_or_generate(dir: &Path) -> anyhow::Result<SigningKey> {
        let file = dir.join(KEY_FILE);
        if let Ok(bytes) = std::fs::read(&file) {
            return Self::from_pkcs8(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()));
        }
        let (key, pkcs8) = Self::generate()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
            f.write_all(&pkcs8)?;
        }
        std::fs::rename(&tmp, &file)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
        Ok(key)
    }

    fn from_pair(kp: &KeyPair, pkcs8: &[u8]) -> anyhow::Result<SigningKey> {
        let components = PublicKeyComponents::<Vec<u8>>::from(kp.public_key());
        let n = URL_SAFE_NO_PAD.encode(strip_zeros(&components.n));
        let e = URL_SAFE_NO_PAD.encode(strip_zeros(&components.e));
        let thumbprint = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes()));
        let pkcs1 = pkcs8_private_key(pkcs8)
            .ok_or_else(|| anyhow::anyhow!("malformed PKCS#8 key"))?
            .to_vec();
        Ok(SigningKey { pkcs1, n, e, kid })
    }

    pub fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
        jsonwebtoken::EncodingKey::from_rsa_der(&self.pkcs1)
    }

    pub fn decoding_key(&self) -> anyhow::Result<jsonwebtoken::DecodingKey> {
        jsonwebtoken::DecodingKey::from_rsa_components(&self.n, &self.e)
            .map_err(|e| anyhow::anyhow!("bad public key: {e}"))
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        })
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|x| *x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[i..]
}

/// One DER TLV: (tag, content, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..count] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[count..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo` (for RSA: PKCS#1 DER).
fn pkcs8_private_key(pkcs8: &[u8]) -> Option<&[u8]> {
    let (tag, seq, _) = der_tlv(pkcs8)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _version, rest) = der_tlv(seq)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, _alg, rest) = der_tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, key, _) = der_tlv(rest)?;
    (tag == 0x04).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_tokens_its_jwk_verifies_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_generate(dir.path()).unwrap();
        let again = SigningKey::load_or_generate(dir.path()).unwrap();
        assert_eq!(key.kid, again.kid);
        assert_eq!(key.n, again.n);

        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        let claims = serde_json::json!({"sub": "trader", "exp": 4_000_000_000u64});
        let token = jsonwebtoken::encode(&header, &claims, &again.encoding_key()).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &key.decoding_key().unwrap(), &v)
                .unwrap();
        assert_eq!(data.claims["sub"], "trader");
        assert_eq!(key.e, "AQAB");
    }
}
