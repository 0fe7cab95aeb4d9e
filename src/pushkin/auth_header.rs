//! The `authorization` header of a cached credential (an APNs provider JWT,
//! an FCM access token), made once per credential instead of once per push:
//! the value is long (hundreds of bytes) and is otherwise formatted and
//! checked on every request.

use std::sync::{Arc, Mutex};

use http::HeaderValue;

/// `<scheme> <credential>` for the credential in use, remembered until the credential changes.
pub struct AuthHeader {
    scheme: &'static str,
    last: Mutex<Option<(Arc<str>, HeaderValue)>>,
}

impl AuthHeader {
    /// Headers of the form `<scheme> <credential>` (`bearer` for APNs, `Bearer` for FCM).
    pub fn new(scheme: &'static str) -> AuthHeader {
        AuthHeader {
            scheme,
            last: Mutex::new(None),
        }
    }

    /// The header value for `credential` (marked sensitive: never indexed by HPACK).
    pub fn value(&self, credential: &Arc<str>) -> Result<HeaderValue, String> {
        if let Ok(last) = self.last.lock() {
            if let Some((c, v)) = last.as_ref() {
                if Arc::ptr_eq(c, credential) {
                    return Ok(v.clone());
                }
            }
        }
        let mut v = HeaderValue::from_str(&format!("{} {credential}", self.scheme))
            .map_err(|_| "the credential is not usable in an HTTP header".to_owned())?;
        v.set_sensitive(true);
        if let Ok(mut last) = self.last.lock() {
            *last = Some((credential.clone(), v.clone()));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a value's bytes live: the same buffer means it was not made again.
    fn buffer(v: &Result<HeaderValue, String>) -> Option<*const u8> {
        v.as_ref().ok().map(|v| v.as_bytes().as_ptr())
    }

    #[test]
    fn one_value_per_credential() {
        let h = AuthHeader::new("bearer");
        let a: Arc<str> = Arc::from("token-a");
        let v = h.value(&a);
        assert_eq!(v.as_ref().map(|v| v.as_bytes()), Ok(&b"bearer token-a"[..]));
        assert!(v.as_ref().is_ok_and(HeaderValue::is_sensitive));
        // The same credential again: the value made the first time.
        assert_eq!(buffer(&h.value(&a)), buffer(&v));
        // Same text, another credential: made again, equal.
        let a2: Arc<str> = Arc::from("token-a");
        let v2 = h.value(&a2);
        assert_eq!(v2.as_ref().ok(), v.as_ref().ok());
        assert_ne!(buffer(&v2), buffer(&v));
        let b: Arc<str> = Arc::from("token-b");
        assert_eq!(
            h.value(&b).ok().as_ref().map(HeaderValue::as_bytes),
            Some(&b"bearer token-b"[..])
        );
        let bad: Arc<str> = Arc::from("a\nb");
        assert!(h.value(&bad).is_err());
    }
}
