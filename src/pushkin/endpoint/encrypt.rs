//! RFC 8291 message encryption (Web Push, and UnifiedPush when the pusher
//! gives `p256dh`/`auth`): one RFC 8188 `aes128gcm` record per push, built
//! with ring (P-256 ECDH, HKDF-SHA256, AES-128-GCM).
//!
//! The two steps are kept apart so that the second can be checked against
//! the RFC 8291 §5 example, whose sender key ring cannot be given:
//! - [`UaKeys::encrypt`]: a fresh sender key pair and salt per message and
//!   the ECDH agreement with the user agent's key (RFC 8291 §3.1);
//! - [`seal`]: from the shared secret on — the input keying material from the
//!   auth secret and both public keys (§3.3–3.4), the content-encryption key
//!   and nonce (RFC 8188 §2.2–2.3, one record, so sequence number 0), the
//!   header with the sender's public key as key id (RFC 8188 §2.1, RFC 8291
//!   §4), and the single record ending in the last-record delimiter 0x02.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::hkdf::{self, Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use super::super::outcome::Cause;
use super::super::Outcome;

/// An uncompressed P-256 point (X9.62: 0x04, x, y), the only form RFC 8291 uses on the wire.
type Point = [u8; 65];

/// Salt (16), record size (4), key id length (1), key id (65): RFC 8291 §4's 86 bytes.
const HEADER_LEN: usize = 16 + 4 + 1 + 65;
/// The last-record padding delimiter (0x02) and the AEAD tag.
const RECORD_EXPANSION: usize = 1 + 16;

/// What one `aes128gcm` record adds to its plaintext (RFC 8188 header with
/// a 65-byte key id, the padding delimiter, the AEAD tag).
pub const ENCRYPTION_OVERHEAD: usize = HEADER_LEN + RECORD_EXPANSION;

/// The record size written in the header. RFC 8291 §4 wants it larger than
/// the record; 4096 is what push services take as a whole body (RFC 8030
/// §7.2), so every message the pushkins build fits.
const RECORD_SIZE: usize = 4096;

/// Why a message could not be encrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncryptError {
    #[error("no randomness for the key pair or salt")]
    Random,
    #[error("the sender's public key could not be computed")]
    PublicKey,
    #[error("ECDH with the subscription's key failed")]
    Agreement,
    #[error("key derivation failed")]
    Derivation,
    #[error("a plaintext of {0} bytes does not fit in one record")]
    TooLong(usize),
}

/// The user agent's keys of an RFC 8291 subscription: what a push is encrypted to.
pub struct UaKeys {
    p256dh: Point,
    auth: [u8; 16],
}

impl UaKeys {
    /// Decodes `p256dh` (a P-256 point, compressed or not) and `auth` (16
    /// bytes), base64url or standard base64, padded or not.
    pub fn decode(p256dh: &str, auth: &str) -> Option<UaKeys> {
        // p256 checks that the point is on the curve (and decompresses it),
        // so that a bad key is an unusable subscription, not a failed push.
        let point = p256::PublicKey::from_sec1_bytes(&decode_b64(p256dh)?).ok()?;
        let p256dh = point.to_encoded_point(false).as_bytes().try_into().ok()?;
        let auth = decode_b64(auth)?.try_into().ok()?;
        Some(UaKeys { p256dh, auth })
    }

    /// One `aes128gcm` record of `plaintext`; a failure is this push's.
    pub fn encrypt(&self, plaintext: Vec<u8>) -> Result<Vec<u8>, Outcome> {
        self.seal_fresh(&plaintext)
            .map_err(|e| Outcome::failed(Cause::Local(format!("encryption failed: {e}"))))
    }

    /// RFC 8291 §3.1: a new sender key pair and salt for every message.
    fn seal_fresh(&self, plaintext: &[u8]) -> Result<Vec<u8>, EncryptError> {
        let rng = SystemRandom::new();
        let mut salt = [0u8; 16];
        rng.fill(&mut salt).map_err(|_| EncryptError::Random)?;
        let private =
            EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| EncryptError::Random)?;
        let as_public: Point = private
            .compute_public_key()
            .map_err(|_| EncryptError::PublicKey)?
            .as_ref()
            .try_into()
            .map_err(|_| EncryptError::PublicKey)?;
        let peer = UnparsedPublicKey::new(&ECDH_P256, &self.p256dh);
        agreement::agree_ephemeral(private, &peer, |secret| {
            seal(secret, self, &as_public, &salt, plaintext)
        })
        .map_err(|_| EncryptError::Agreement)?
    }
}

/// Everything after the key agreement: the whole message body for the
/// ECDH `secret` between the sender key `as_public` and the user agent.
fn seal(
    secret: &[u8],
    ua: &UaKeys,
    as_public: &Point,
    salt: &[u8; 16],
    plaintext: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    let record_len = plaintext.len() + RECORD_EXPANSION;
    let rs = u32::try_from(RECORD_SIZE.max(record_len + 1))
        .map_err(|_| EncryptError::TooLong(plaintext.len()))?;

    // RFC 8291 §3.3–3.4: IKM = HKDF(auth, ecdh_secret, "WebPush: info" 0x00 ua_public as_public, 32).
    let mut ikm = [0u8; 32];
    Salt::new(HKDF_SHA256, &ua.auth)
        .extract(secret)
        .expand(&[b"WebPush: info\0", &ua.p256dh, as_public], Len(32))
        .and_then(|okm| okm.fill(&mut ikm))
        .map_err(|_| EncryptError::Derivation)?;

    // RFC 8188 §2.2–2.3: CEK and NONCE from the salt and IKM; one record, so SEQ = 0.
    let prk = Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; aead::NONCE_LEN];
    prk.expand(&[b"Content-Encoding: aes128gcm\0"], Len(cek.len()))
        .and_then(|okm| okm.fill(&mut cek))
        .and_then(|()| prk.expand(&[b"Content-Encoding: nonce\0"], Len(nonce.len())))
        .and_then(|okm| okm.fill(&mut nonce))
        .map_err(|_| EncryptError::Derivation)?;
    let key = UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| EncryptError::Derivation)?;

    // RFC 8188 §2.1 header, then the record: plaintext, delimiter 0x02, no padding, tag.
    let mut body = Vec::with_capacity(HEADER_LEN + record_len);
    body.extend_from_slice(salt);
    body.extend_from_slice(&rs.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    body.extend_from_slice(plaintext);
    body.push(2);
    let tag = LessSafeKey::new(key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut body[HEADER_LEN..],
        )
        .map_err(|_| EncryptError::Derivation)?;
    body.extend_from_slice(tag.as_ref());
    Ok(body)
}

/// An HKDF output length (ring asks for it as a key type).
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Browsers give base64url without padding; some apps pass standard base64 or keep the padding.
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let normalized: String = s
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(normalized).ok()
}

#[cfg(test)]
mod tests;
