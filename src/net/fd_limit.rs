//! The process's open-file limit, raised to what the connection caps need.
//!
//! Every connection is a file descriptor. Many machines start a process with
//! a soft limit of 1,024 (and a hard one far above): at that limit `accept`
//! fails with `EMFILE`, and connections wait in the kernel's backlog until a
//! descriptor frees, which under load may be never. `limits.max_connections`
//! defaults to 4,096, so the gateway raises its soft limit to the hard one at
//! start (as nginx's `worker_rlimit_nofile` or Go's runtime do) and warns when
//! even that is too small for the caps in the config.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The open-file limit after [`raise`]: the soft limit (`None`: unlimited)
/// and, when raising failed, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: Option<u64>,
    pub raised_from: Option<u64>,
    pub error: Option<String>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; idempotent.
pub fn raise() -> FdLimit {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current == maximum {
        return FdLimit {
            soft: current,
            raised_from: None,
            error: None,
        };
    }
    let wanted = Rlimit {
        current: maximum,
        maximum,
    };
    match setrlimit(Resource::Nofile, wanted) {
        Ok(()) => FdLimit {
            soft: maximum,
            raised_from: current,
            error: None,
        },
        Err(e) => FdLimit {
            soft: current,
            raised_from: None,
            error: Some(e.to_string()),
        },
    }
}

impl FdLimit {
    /// The soft limit as text: a number, or `unlimited`.
    pub fn soft_text(&self) -> String {
        self.soft
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
    }
}

/// Whether `limit` leaves room for `needed` descriptors.
pub fn enough(limit: &FdLimit, needed: u64) -> bool {
    limit.soft.is_none_or(|soft| soft >= needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let limit = raise();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(limit.soft, after.current);
        assert_eq!(after.current, after.maximum, "{limit:?}");
        // A second call finds nothing to raise.
        assert_eq!(raise().raised_from, None);
    }

    #[test]
    fn enough_compares_with_the_soft_limit() {
        let at = |soft| FdLimit {
            soft,
            raised_from: None,
            error: None,
        };
        assert!(enough(&at(Some(5000)), 4352));
        assert!(!enough(&at(Some(1024)), 4352));
        assert!(enough(&at(None), u64::MAX));
    }
}
