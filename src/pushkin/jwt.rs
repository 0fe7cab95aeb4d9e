//! The one place JSON Web Tokens are minted: ES256 (APNs provider tokens,
//! VAPID) and RS256 (the Google OAuth assertion), compact form.
//!
//! Hand-rolled on the keys the gateway already holds (`p256`, `ring`) rather
//! than with `jsonwebtoken`: see docs/architecture.md § "JWTs". The header
//! and claims are given as JSON text so that the bytes each service receives
//! stay exactly what they were.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

/// The RSA key refused to sign (never seen with a key that parsed).
#[derive(Debug, thiserror::Error)]
#[error("RS256 signing failed")]
pub struct SigningFailed;

/// `base64url(header).base64url(claims)`, the part that is signed.
fn signing_input(header: &str, claims: &str) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

/// An ES256 JWT (ECDSA P-256 with SHA-256, the signature as `r || s`).
pub fn es256(key: &SigningKey, header: &str, claims: &str) -> String {
    let input = signing_input(header, claims);
    let sig: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// An RS256 JWT (RSASSA-PKCS1-v1_5 with SHA-256).
pub fn rs256(key: &RsaKeyPair, header: &str, claims: &str) -> Result<String, SigningFailed> {
    let input = signing_input(header, claims);
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| SigningFailed)?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::{signature::Verifier, VerifyingKey};

    #[test]
    fn es256_tokens_verify_and_carry_the_given_json() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let jwt = es256(&key, r#"{"alg":"ES256"}"#, r#"{"iss":"T"}"#);
        let (input, sig) = jwt.rsplit_once('.').expect("signature");
        let (h, c) = input.split_once('.').expect("claims");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(h).expect("b64"),
            br#"{"alg":"ES256"}"#
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(c).expect("b64"), br#"{"iss":"T"}"#);
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).expect("b64")).expect("sig");
        VerifyingKey::from(&key)
            .verify(input.as_bytes(), &sig)
            .expect("valid");
    }
}
